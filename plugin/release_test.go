package plugin

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// listerFunc answers PodResources List from a map resource -> IDs (a fake:
// no kubelet runs in unit tests; the binding package tests a gRPC server).
type listerFunc map[string][]string

func (l listerFunc) List(context.Context, *podresourcesv1.ListPodResourcesRequest, ...grpc.CallOption) (*podresourcesv1.ListPodResourcesResponse, error) {
	c := &podresourcesv1.ContainerResources{Name: "c"}
	for res, ids := range l {
		c.Devices = append(c.Devices, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: ids})
	}
	return &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{Name: "p", Namespace: "ns", Containers: []*podresourcesv1.ContainerResources{c}}}}, nil
}

func TestDeviceInfoRemovedWhenReleased(t *testing.T) {
	h := startHarness(t, 1, 3, `pools: [{name: vf, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.NewNop())
	regs := h.registrations(t, 1)
	c := h.kubelet.client(t, regs["sriov-cdi.io/vf"])
	if _, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1", "0000:01:00.2"}}}}); err != nil {
		t.Fatal(err)
	}
	file := func(id string) string { return filepath.Join(h.dir, "devinfo", "sriov-cdi.io-vf-"+id+"-device.json") }
	exists := func(id string) bool { _, err := os.Stat(file(id)); return err == nil }
	lister := listerFunc{"sriov-cdi.io/vf": {"0000:01:00.1"}}

	// Within the grace period nothing goes (kubelet may not have recorded
	// the assignment yet).
	if err := h.mgr.pollReleases(context.Background(), lister, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !exists("0000:01:00.1") || !exists("0000:01:00.2") {
		t.Fatal("a file was removed within the grace period")
	}
	// Later: the device no pod holds loses its file; the held one keeps it.
	if err := h.mgr.pollReleases(context.Background(), lister, time.Now().Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !exists("0000:01:00.1") || exists("0000:01:00.2") {
		t.Errorf("after release: 01:00.1 kept=%v (want true), 01:00.2 kept=%v (want false)", exists("0000:01:00.1"), exists("0000:01:00.2"))
	}
}
