// Package load generates remote-write and PromQL load for fleetgate's
// side-by-side benchmarks. Nothing in fleetgate imports it.
package load

import (
	"fmt"
	"sort"
	"strconv"
)

// Label is one label pair of a generated series.
type Label struct{ Name, Value string }

// Family kinds mimic what a Kubernetes cluster actually sends.
const (
	kindKSM = iota
	kindCAdvisor
	kindNode
	kindAppHistogram
	numKinds
)

var (
	namespaces  = []string{"default", "kube-system", "monitoring", "payments", "checkout", "search", "ingress-nginx", "cert-manager", "data", "web"}
	ksmMetrics  = []string{"kube_pod_container_status_restarts_total", "kube_pod_container_resource_requests", "kube_pod_status_phase", "kube_pod_container_status_ready"}
	cadvMetrics = []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_network_receive_bytes_total", "container_fs_writes_bytes_total"}
	nodeModes   = []string{"idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"}
	routes      = []string{"/api/v1/orders", "/api/v1/cart", "/api/v1/users/:id", "/healthz", "/api/v1/search"}
	les         = []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"}
	methods     = []string{"GET", "POST"}
	codes       = []string{"200", "500"}
)

// SeriesLabels returns the sorted label set of series i (generation gen) of
// cluster. A new generation of the same index is a new pod: that is churn.
// Every set has 8-15 labels, including `cluster`.
func SeriesLabels(cluster string, i, gen int) []Label {
	kind := i % numKinds
	j := i / numKinds
	ns := namespaces[j%len(namespaces)]
	podN := j / 8
	pod := fmt.Sprintf("%s-app-%06x-%x", ns, podN, gen)
	node := "node-" + strconv.Itoa(podN%200)
	instance := "10.0." + strconv.Itoa(podN%200) + ".1:10250"
	var ls []Label
	switch kind {
	case kindKSM:
		ls = []Label{
			{"__name__", ksmMetrics[j%len(ksmMetrics)]}, {"cluster", cluster}, {"namespace", ns}, {"pod", pod},
			{"container", "app-" + strconv.Itoa(j%8)}, {"uid", fmt.Sprintf("%08x-%04x-4000-8000-%012x", podN, gen&0xffff, j)},
			{"job", "kube-state-metrics"}, {"instance", "10.1.0.5:8080"}, {"service", "kube-state-metrics"},
			{"endpoint", "http"},
		}
	case kindCAdvisor:
		ls = []Label{
			{"__name__", cadvMetrics[j%len(cadvMetrics)]}, {"cluster", cluster}, {"namespace", ns}, {"pod", pod},
			{"container", "app-" + strconv.Itoa(j%8)}, {"image", "registry.example.com/" + ns + "/app:v1." + strconv.Itoa(j%7)},
			{"id", "/kubepods/burstable/pod" + pod + "/" + strconv.Itoa(j)}, {"name", "k8s_app_" + pod},
			{"node", node}, {"instance", instance}, {"job", "kubelet"}, {"metrics_path", "/metrics/cadvisor"},
			{"endpoint", "https-metrics"},
		}
	case kindNode:
		ls = []Label{
			{"__name__", "node_cpu_seconds_total"}, {"cluster", cluster}, {"cpu", strconv.Itoa(j % 64)},
			{"mode", nodeModes[(j/64)%len(nodeModes)]}, {"instance", "10.0." + strconv.Itoa((j/512)%250) + "." + strconv.Itoa(j/128000) + ":9100"},
			{"job", "node-exporter"}, {"namespace", "monitoring"}, {"pod", "node-exporter-" + strconv.Itoa((j/512)%250)},
			{"container", "node-exporter"}, {"service", "node-exporter"},
		}
	default:
		ls = []Label{
			{"__name__", "http_request_duration_seconds_bucket"}, {"cluster", cluster}, {"namespace", ns}, {"pod", pod},
			{"service", ns + "-api"}, {"method", methods[(j/11)%2]}, {"route", routes[(j/22)%len(routes)]},
			{"status_code", codes[(j/110)%2]}, {"le", les[j%len(les)]}, {"job", ns + "/" + ns + "-api"},
			{"instance", instance}, {"container", "api"}, {"endpoint", "metrics"},
		}
	}
	sort.Slice(ls, func(a, b int) bool { return ls[a].Name < ls[b].Name })
	return ls
}

// Value returns a plausible value for series i at round r: counters grow,
// gauges wiggle, so the TSDB compresses them as it would real data.
func Value(i, r int) float64 {
	switch i % numKinds {
	case kindCAdvisor, kindNode, kindAppHistogram:
		return float64(r*(i%97+1)) + float64(i%13)
	}
	return float64((i*7+r)%50) + 0.5
}
