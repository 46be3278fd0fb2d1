package procmem

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFields(t *testing.T) {
	in := "00400000-7fff0000 ---p 00000000 00:00 0 [rollup]\nRss:               24576 kB\nPss_Anon:           8912 kB\nPss_File:          15770 kB\nVmHWM:\t   25088 kB\nName:\tsriov-cdi\n"
	want := map[string]int{"Rss": 24576, "Pss_Anon": 8912, "Pss_File": 15770, "VmHWM": 25088}
	if diff := cmp.Diff(want, fields(in)); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
}

// The running test process has a peak RSS and a PSS.
func TestSelf(t *testing.T) {
	hwm, err := HWM(os.Getpid())
	if err != nil || hwm <= 0 {
		t.Errorf("HWM = %d, %v", hwm, err)
	}
	anon, file, err := PSS(os.Getpid())
	if err != nil {
		t.Skipf("no smaps_rollup here: %v", err)
	}
	if anon <= 0 || file <= 0 {
		t.Errorf("PSS = %d / %d KiB", anon, file)
	}
	if _, err := HWM(-1); err == nil {
		t.Error("HWM of no process succeeded")
	}
}
