package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/core/config"
)

// KubeletSocketName is kubelet's registration socket in the device plugin
// directory.
const KubeletSocketName = "kubelet.sock"

// endpoint serves one DevicePluginServer on a unix socket in dir and
// registers it with kubelet. It knows nothing about devices.
type endpoint struct {
	dir      string
	sockName string
	resource string
	server   pluginapi.DevicePluginServer
	options  *pluginapi.DevicePluginOptions
	log      *zap.Logger

	mu         sync.Mutex
	grpcServer *grpc.Server
	registered bool
	failing    bool // registration failed since the last success
}

func newEndpoint(dir, resource string, srv pluginapi.DevicePluginServer, opts *pluginapi.DevicePluginOptions, log *zap.Logger) *endpoint {
	return &endpoint{dir: dir, sockName: socketName(resource), resource: resource, server: srv, options: opts, log: log}
}

// socketName is unique per resource and recognisably ours.
func socketName(resource string) string {
	return config.SocketName(resource) // one mangling rule, which config validation checks for collisions
}

func (e *endpoint) socketPath() string { return filepath.Join(e.dir, e.sockName) }

// serve (re)starts the gRPC server on a fresh socket. kubelet dials back
// synchronously during Register, so serving comes first.
func (e *endpoint) serve() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.grpcServer != nil {
		e.grpcServer.Stop()
		e.grpcServer = nil
	}
	e.registered = false
	path := e.socketPath()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %q: %w", path, err)
	}
	if len(path) > config.MaxSocketPath {
		return fmt.Errorf("listen on %q: the path is %d bytes, over the %d a unix socket path holds (a shorter --device-plugin-dir, pool name or resource prefix fixes it)", path, len(path), config.MaxSocketPath)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", path, err)
	}
	gs := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(gs, e.server)
	e.grpcServer = gs
	go func() {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			e.log.Error("device plugin server stopped", zap.String("socket", path), zap.Error(err))
		}
	}()
	return nil
}

// register tells kubelet about the endpoint.
func (e *endpoint) register(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kubelet := filepath.Join(e.dir, KubeletSocketName)
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial kubelet at %q: %w", kubelet, err)
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     e.sockName,
		ResourceName: e.resource,
		Options:      e.options,
	}, grpc.WaitForReady(false))
	if err != nil {
		return fmt.Errorf("register %s with kubelet at %q: %w", e.resource, kubelet, err)
	}
	e.mu.Lock()
	e.registered, e.failing = true, false
	e.mu.Unlock()
	return nil
}

// failedRegistering records a failed registration and reports whether it
// is the first since the last success: an outage is logged once per pool.
func (e *endpoint) failedRegistering() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	first := !e.failing
	e.failing = true
	return first
}

func (e *endpoint) isRegistered() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.registered
}

// stop ends serving and removes the socket.
func (e *endpoint) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.grpcServer != nil {
		// Let ListAndWatch streams deliver their final empty list.
		done := make(chan struct{})
		go func() { e.grpcServer.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
			e.grpcServer.Stop()
		}
		e.grpcServer = nil
	}
	e.registered = false
	_ = os.Remove(e.socketPath())
}
