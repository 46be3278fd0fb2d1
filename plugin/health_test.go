package plugin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// TestHealthAndMetricsScrape scrapes the running plugin's endpoints.
func TestHealthAndMetricsScrape(t *testing.T) {
	h := startHarness(t, 2, 2, twoPools, nil, zap.NewNop())
	regs := h.registrations(t, 2)
	h.waitRegistrations(t, 2)
	srv := httptest.NewServer(HealthHandler(h.mgr))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d", code)
	}
	c := h.kubelet.client(t, regs["example.com/vf-a"])
	if _, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1"}}}}); err != nil {
		t.Fatal(err)
	}
	c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:07:00.1"}}}})
	_, body := get("/metrics")
	for _, want := range []string{
		`sriov_cdi_devices{health="healthy",pool="vf-a"} 2`,
		`sriov_cdi_devices{health="unhealthy",pool="vf-a"} 0`,
		`sriov_cdi_allocations_total{pool="vf-a",result="ok"} 1`,
		`sriov_cdi_allocations_total{pool="vf-a",result="error"} 1`,
		`sriov_cdi_allocate_duration_seconds_count{pool="vf-a"} 2`,
		`sriov_cdi_registrations_total{resource="example.com/vf-b"} 1`,
		`sriov_cdi_refused_devices{pool="vf-a"} 1`, // the PF itself: it has VFs enabled
		`sriov_cdi_rescans_total{kind="full"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
