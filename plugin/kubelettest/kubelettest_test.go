package kubelettest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

func names(resp *podresourcesv1.ListPodResourcesResponse) []string {
	var out []string
	for _, p := range resp.GetPodResources() {
		out = append(out, p.GetName())
	}
	return out
}

func TestScriptedAnswers(t *testing.T) {
	f := New()
	f.SetPod("a", Device{"r", []string{"0000:01:00.1"}})
	old := f.Snapshot()
	f.SetPod("b", Device{"r", []string{"0000:01:00.2"}})
	boom := errors.New("boom")
	f.Script(Answer{Only: []string{"b"}}, Answer{Only: []string{}}, Answer{Err: boom}, Answer{From: old})
	ctx := context.Background()
	for i, want := range [][]string{{"b"}, nil, nil, {"a"}, {"a", "b"}} {
		resp, err := f.List(ctx, nil)
		if i == 2 {
			if !errors.Is(err, boom) {
				t.Errorf("call %d: got %v, want the scripted error", i, err)
			}
			continue
		}
		if err != nil || !slices.Equal(names(resp), want) {
			t.Errorf("call %d: got %v, %v; want %v", i, names(resp), err, want)
		}
	}
	if f.Calls() != 5 {
		t.Errorf("calls = %d", f.Calls())
	}
}

// Two calls in flight: the first is held by a gate and answers after the
// second, with the older picture.
func TestOutOfOrderAndSlow(t *testing.T) {
	f := New()
	f.SetPod("a", Device{"r", []string{"0000:01:00.1"}})
	gate := make(chan struct{})
	f.Script(Answer{Gate: gate, From: f.Snapshot()})
	ctx := context.Background()
	first := make(chan []string, 1)
	go func() {
		resp, _ := f.List(ctx, nil)
		first <- names(resp)
	}()
	<-f.Started()
	f.DeletePod("a")
	resp, err := f.List(ctx, nil)
	if err != nil || len(names(resp)) != 0 {
		t.Errorf("second call: %v, %v; want no pod", names(resp), err)
	}
	close(gate)
	if got := <-first; !slices.Equal(got, []string{"a"}) {
		t.Errorf("first call, answered last: %v, want the old picture [a]", got)
	}

	f.Script(Answer{Delay: time.Hour})
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := f.List(cctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow answer: got %v, want the caller's deadline", err)
	}
}

func TestServe(t *testing.T) {
	f := New()
	f.SetPod("a", Device{"r", []string{"0000:01:00.1"}})
	conn, err := grpc.NewClient("unix://"+Serve(t, f), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := podresourcesv1.NewPodResourcesListerClient(conn).List(context.Background(), &podresourcesv1.ListPodResourcesRequest{})
	if err != nil || !slices.Equal(names(resp), []string{"a"}) || resp.PodResources[0].Containers[0].Devices[0].DeviceIds[0] != "0000:01:00.1" {
		t.Errorf("over gRPC: %v, %v", resp, err)
	}
}
