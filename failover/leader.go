package failover

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderElectionConfig elects the one replica that emits signals, with a
// Kubernetes Lease.
type LeaderElectionConfig struct {
	Enabled       bool           `yaml:"enabled"`
	Namespace     string         `yaml:"namespace"`
	LeaseName     string         `yaml:"lease_name"`
	Identity      string         `yaml:"identity"` // default: hostname
	LeaseDuration model.Duration `yaml:"lease_duration"`
	RenewDeadline model.Duration `yaml:"renew_deadline"`
	RetryPeriod   model.Duration `yaml:"retry_period"`
}

// WithDefaults fills unset fields.
func (c LeaderElectionConfig) WithDefaults() LeaderElectionConfig {
	if c.LeaseName == "" {
		c.LeaseName = "fleetgate-signals"
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = model.Duration(15 * time.Second)
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = model.Duration(10 * time.Second)
	}
	if c.RetryPeriod == 0 {
		c.RetryPeriod = model.Duration(2 * time.Second)
	}
	return c
}

// Validate names the first bad field by its key relative to the block
// (signals.kubernetes.leader_election).
func (c *LeaderElectionConfig) Validate() error {
	if !c.Enabled {
		return nil
	}
	d := c.WithDefaults()
	switch {
	case c.Namespace == "":
		return fmt.Errorf("namespace: empty")
	case !dnsLabelRE.MatchString(d.LeaseName):
		return fmt.Errorf("lease_name: %q is not a valid object name", d.LeaseName)
	case d.RenewDeadline >= d.LeaseDuration:
		return fmt.Errorf("renew_deadline: must be below lease_duration (%s)", d.LeaseDuration)
	case d.RetryPeriod <= 0 || d.RetryPeriod >= d.RenewDeadline:
		return fmt.Errorf("retry_period: must be positive and below renew_deadline (%s)", d.RenewDeadline)
	}
	return nil
}

// LeaseLeader is a Leader elected on a Kubernetes Lease.
type LeaseLeader struct {
	cfg     LeaderElectionConfig
	client  kubernetes.Interface
	logger  *slog.Logger
	leading atomic.Bool
}

// NewLeaseLeader builds the elector; Run campaigns.
func NewLeaseLeader(cfg LeaderElectionConfig, client kubernetes.Interface, identity string, logger *slog.Logger) *LeaseLeader {
	cfg = cfg.WithDefaults()
	if cfg.Identity == "" {
		cfg.Identity = identity
	}
	return &LeaseLeader{cfg: cfg, client: client, logger: logger}
}

// IsLeader implements Leader.
func (l *LeaseLeader) IsLeader() bool { return l.leading.Load() }

// Run campaigns for the lease until ctx ends, campaigning again after a loss.
func (l *LeaseLeader) Run(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1ObjectMeta(l.cfg.Namespace, l.cfg.LeaseName),
		Client:     l.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.cfg.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   time.Duration(l.cfg.LeaseDuration),
			RenewDeadline:   time.Duration(l.cfg.RenewDeadline),
			RetryPeriod:     time.Duration(l.cfg.RetryPeriod),
			ReleaseOnCancel: true,
			Name:            l.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					l.leading.Store(true)
					l.logger.Info("leading: this replica emits failover signals", "lease", l.cfg.Namespace+"/"+l.cfg.LeaseName, "identity", l.cfg.Identity)
				},
				OnStoppedLeading: func() {
					l.leading.Store(false)
					l.logger.Info("not leading: signals paused", "identity", l.cfg.Identity)
				},
				OnNewLeader: func(id string) {
					if id != l.cfg.Identity {
						l.logger.Info("another replica leads", "leader", id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
		l.leading.Store(false)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(l.cfg.RetryPeriod)):
		}
	}
	return nil
}

func metav1ObjectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name}
}
