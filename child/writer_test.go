package child

import (
	"bytes"
	"testing"

	"github.com/tidwall/redcon"
)

// TestBufLen: bufLen reads redcon.Writer's buffer length in place; if an
// upgrade of redcon changes the Writer, it falls back to copying the
// buffer (correct but slow) and this test says so.
func TestBufLen(t *testing.T) {
	if writerBuf < 0 {
		t.Fatal("redcon.Writer has no []byte field b any more: bufLen copies the reply buffer on every command; update bufLen")
	}
	var out bytes.Buffer
	w := redcon.NewWriter(&out)
	w.WriteString("OK")
	w.WriteBulkString("hello")
	if got, want := bufLen(w), len(w.Buffer()); got != want || got == 0 {
		t.Fatalf("bufLen = %d, want %d", got, want)
	}
	truncateReplies(w, 5)
	if got := string(w.Buffer()); got != "+OK\r\n" {
		t.Fatalf("after truncating to the first reply: %q", got)
	}
}
