package plugin

import (
	"net/http"
)

// HealthHandler serves /healthz (liveness: the main loop is turning),
// /readyz (readiness: every pool is registered with kubelet) and /metrics.
func HealthHandler(m *Manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.Alive() {
			http.Error(w, "main loop stalled", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.Ready() {
			http.Error(w, "not every pool is registered with kubelet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", m.Metrics().Handler())
	return mux
}
