package otlp

import (
	"context"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // OTLP exporters compress with gzip by default
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
)

// RegisterGRPC registers the three OTLP services on s.
func (rc *Receiver) RegisterGRPC(s *grpc.Server) {
	pmetricotlp.RegisterGRPCServer(s, &metricsServer{rc: rc})
	plogotlp.RegisterGRPCServer(s, &logsServer{rc: rc})
	ptraceotlp.RegisterGRPCServer(s, &tracesServer{rc: rc})
}

// ServerOptions are the gRPC server options the receiver needs: the message
// size limit, and the same connection hygiene as the HTTP listeners (a
// handshake within 10 s, idle connections closed after 2 min, clients that
// ping more often than every 10 s cut off).
func (rc *Receiver) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(rc.cfg.MaxRequestBytes),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 2 * time.Minute}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}

// credentialFromGRPC reads the bearer token from the authorization metadata
// and the verified client certificate from the TLS peer.
func credentialFromGRPC(ctx context.Context) fleet.Credential {
	var c fleet.Credential
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
				c.BearerToken = strings.TrimSpace(v[7:])
			}
		}
		if v := md.Get(strings.ToLower(fleet.DevHeader)); len(v) > 0 {
			c.Claimed = v[0]
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			c.PeerCert = ti.State.PeerCertificates[0]
		}
	}
	return c
}

func (rc *Receiver) grpcIdentify(ctx context.Context) (*fleet.Cluster, error) {
	return rc.sig.Registry().Identify(credentialFromGRPC(ctx))
}

func (rc *Receiver) grpcError(signal string, err error, unauth bool) error {
	s := statusOf(err)
	if unauth {
		s = http.StatusUnauthorized
	}
	outcome := "rejected"
	if retryable(s) {
		outcome = "retryable_error"
	}
	rc.requests.WithLabelValues(signal, "grpc", outcome).Inc()
	if s >= 500 {
		rc.logger.Error("OTLP export failed", "signal", signal, "err", err)
	}
	st := status.New(grpcCode(s), core.Truncate(err.Error(), maxErrorMessage))
	if s == http.StatusTooManyRequests {
		// RESOURCE_EXHAUSTED is only retried by OTLP exporters with RetryInfo.
		delay := max(core.ErrorRetryAfter(err), time.Second)
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

type metricsServer struct {
	pmetricotlp.UnimplementedGRPCServer
	rc *Receiver
}

func (s *metricsServer) Export(ctx context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	resp := pmetricotlp.NewExportResponse()
	c, err := s.rc.grpcIdentify(ctx)
	if err != nil {
		return resp, s.rc.grpcError("metrics", err, true)
	}
	if err := s.rc.pipe.Limiter().Admit(c, core.BudgetSamples); err != nil {
		return resp, s.rc.grpcError("metrics", err, false)
	}
	defer s.rc.pipe.Limiter().Done(c)
	res, err := s.rc.ExportMetrics(ctx, c, req.Metrics())
	if err != nil {
		return resp, s.rc.grpcError("metrics", err, false)
	}
	if res.Rejected > 0 || res.Message != "" {
		resp.PartialSuccess().SetRejectedDataPoints(res.Rejected)
		resp.PartialSuccess().SetErrorMessage(res.Message)
	}
	s.rc.requests.WithLabelValues("metrics", "grpc", "accepted").Inc()
	return resp, nil
}

type logsServer struct {
	plogotlp.UnimplementedGRPCServer
	rc *Receiver
}

func (s *logsServer) Export(ctx context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	resp := plogotlp.NewExportResponse()
	c, err := s.rc.grpcIdentify(ctx)
	if err != nil {
		return resp, s.rc.grpcError("logs", err, true)
	}
	if err := s.rc.pipe.Limiter().Admit(c, core.BudgetLogBytes); err != nil {
		return resp, s.rc.grpcError("logs", err, false)
	}
	defer s.rc.pipe.Limiter().Done(c)
	if _, err := s.rc.ExportLogs(ctx, c, req.Logs()); err != nil {
		return resp, s.rc.grpcError("logs", err, false)
	}
	s.rc.requests.WithLabelValues("logs", "grpc", "accepted").Inc()
	return resp, nil
}

type tracesServer struct {
	ptraceotlp.UnimplementedGRPCServer
	rc *Receiver
}

func (s *tracesServer) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	resp := ptraceotlp.NewExportResponse()
	c, err := s.rc.grpcIdentify(ctx)
	if err != nil {
		return resp, s.rc.grpcError("traces", err, true)
	}
	if err := s.rc.pipe.Limiter().Admit(c, core.BudgetNone); err != nil {
		return resp, s.rc.grpcError("traces", err, false)
	}
	defer s.rc.pipe.Limiter().Done(c)
	if _, err := s.rc.ExportTraces(ctx, c, req.Traces()); err != nil {
		return resp, s.rc.grpcError("traces", err, false)
	}
	s.rc.requests.WithLabelValues("traces", "grpc", "accepted").Inc()
	return resp, nil
}
