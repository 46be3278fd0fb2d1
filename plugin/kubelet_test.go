package plugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fakeKubelet is a registration server on <dir>/kubelet.sock. It stands in
// for kubelet in unit tests only (a kubelet cannot run here); the real
// kubelet client code drives the plugin in e2e/k8s, and a real kubelet in
// the e2e kubelet lab.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	dir string
	gs  *grpc.Server

	mu   sync.Mutex
	regs []*pluginapi.RegisterRequest
	at   []time.Time
	ch   chan *pluginapi.RegisterRequest
}

func startFakeKubelet(t testing.TB, dir string) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{dir: dir, ch: make(chan *pluginapi.RegisterRequest, 1024)}
	k.start(t)
	t.Cleanup(k.stop)
	return k
}

func (k *fakeKubelet) start(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(k.dir, KubeletSocketName))
	if err != nil {
		t.Fatal(err)
	}
	k.gs = grpc.NewServer()
	pluginapi.RegisterRegistrationServer(k.gs, k)
	go k.gs.Serve(lis)
}

func (k *fakeKubelet) stop() {
	if k.gs != nil {
		k.gs.Stop()
		k.gs = nil
	}
}

// restart behaves like a kubelet restart: stop, delete every socket in the
// directory, listen again.
func (k *fakeKubelet) restart(t testing.TB) time.Time {
	t.Helper()
	k.stop()
	entries, _ := os.ReadDir(k.dir)
	for _, e := range entries {
		os.Remove(filepath.Join(k.dir, e.Name()))
	}
	created := time.Now()
	k.start(t)
	return created
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	// kubelet dials the plugin back before answering; so do we.
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pluginapi.NewDevicePluginClient(conn).GetDevicePluginOptions(ctx, &pluginapi.Empty{}); err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.regs = append(k.regs, r)
	k.at = append(k.at, time.Now())
	k.mu.Unlock()
	k.ch <- r
	return &pluginapi.Empty{}, nil
}

// waitRegister returns the next registration or fails after timeout.
func (k *fakeKubelet) waitRegister(t testing.TB, timeout time.Duration) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case r := <-k.ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("no registration within %v", timeout)
		return nil
	}
}

// client dials a registered plugin the way kubelet does.
func (k *fakeKubelet) client(t testing.TB, r *pluginapi.RegisterRequest) pluginapi.DevicePluginClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}
