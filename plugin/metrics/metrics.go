// Package metrics defines the Prometheus metrics of sriov-cdi on a registry
// of its own (no global registry): devices per pool and health,
// allocations, bind/restore operations and their latency, interlock
// refusals, registrations and rescans.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every collector. The zero value is not usable; use New.
type Metrics struct {
	Registry *prometheus.Registry

	// Devices: units advertised, by pool and health ("healthy", "unhealthy").
	Devices *prometheus.GaugeVec
	// Refused: functions a pool's selectors matched but that it refuses
	// (interlocks: host in use, group not viable, driver not allowed), by pool.
	Refused *prometheus.GaugeVec
	// Allocations: Allocate calls by pool and result ("ok", "error").
	Allocations *prometheus.CounterVec
	// AllocateSeconds: Allocate latency by pool, binding included.
	AllocateSeconds *prometheus.HistogramVec
	// BindOps: kernel driver operations by op ("bind", "restore") and result.
	BindOps *prometheus.CounterVec
	// BindSeconds: latency of one unit's bind or restore, by op.
	BindSeconds *prometheus.HistogramVec
	// Registrations: successful registrations with kubelet, by resource.
	Registrations *prometheus.CounterVec
	// Rescans: host reads by kind ("full", "refresh").
	Rescans *prometheus.CounterVec
}

// New creates the collectors on a fresh registry, with Go and process
// collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Devices: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "sriov_cdi", Name: "devices",
			Help: "Devices (allocation units) advertised to kubelet, by pool and health."}, []string{"pool", "health"}),
		Refused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "sriov_cdi", Name: "refused_devices",
			Help: "Functions a pool's selectors match but that an interlock refuses, by pool."}, []string{"pool"}),
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sriov_cdi", Name: "allocations_total",
			Help: "Allocate calls, by pool and result."}, []string{"pool", "result"}),
		AllocateSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "sriov_cdi", Name: "allocate_duration_seconds",
			Help: "Allocate latency including driver binding, by pool.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"pool"}),
		BindOps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sriov_cdi", Name: "driver_operations_total",
			Help: "Driver operations on functions, by operation (bind, restore) and result."}, []string{"op", "result"}),
		BindSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "sriov_cdi", Name: "driver_operation_duration_seconds",
			Help: "Latency of one unit's driver operation, by operation.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"op"}),
		Registrations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sriov_cdi", Name: "registrations_total",
			Help: "Successful registrations with kubelet, by resource (more than one means kubelet restarted)."}, []string{"resource"}),
		Rescans: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sriov_cdi", Name: "rescans_total",
			Help: "Reads of the host's PCI functions, by kind (full, refresh)."}, []string{"kind"}),
	}
	m.Registry.MustRegister(m.Devices, m.Refused, m.Allocations, m.AllocateSeconds, m.BindOps, m.BindSeconds, m.Registrations, m.Rescans,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
