package daemon

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testnats"
)

// silentProxy forwards TCP connections to a server until it is frozen:
// then it stops forwarding in both directions but keeps every connection
// open, as a WAN link that goes silent does (no FIN, no RST).
type silentProxy struct {
	ln     net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func startSilentProxy(t *testing.T, target string) *silentProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln}
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.frozen.Load() {
				p.track(c) // accepted and never answered
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.track(c)
			p.track(s)
			go p.pipe(c, s)
			go p.pipe(s, c)
		}
	}()
	return p
}

func (p *silentProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

// pipe copies until the proxy freezes; then it reads and drops.
func (p *silentProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if p.frozen.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *silentProxy) url() string { return "nats://" + p.ln.Addr().String() }

// TestNATSNoticesSilentLink: a child's NATS connection whose link goes
// silent without closing counts as dead after MaxPingsOut unanswered pings
// and reconnects once the link is back, instead of hanging on a connection
// that only looks open.
func TestNATSNoticesSilentLink(t *testing.T) {
	srv := testnats.Start(t, "sgp")
	proxy := startSilentProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	const ping = 100 * time.Millisecond
	n := NATS{URL: proxy.url(), PingInterval: ping}
	nc, err := n.connect("test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitStatus := func(want nats.Status, within time.Duration) time.Duration {
		t.Helper()
		t0 := time.Now()
		for nc.Status() != want {
			if time.Since(t0) > within {
				t.Fatalf("connection is %v after %v, want %v", nc.Status(), within, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(t0)
	}
	waitStatus(nats.CONNECTED, 5*time.Second)

	proxy.frozen.Store(true)
	took := waitStatus(nats.RECONNECTING, 20*ping*MaxPingsOut)
	t.Logf("silent link noticed after %v (ping every %v, %d may go unanswered)", took.Round(time.Millisecond), ping, MaxPingsOut)

	proxy.frozen.Store(false)
	waitStatus(nats.CONNECTED, 5*time.Second)
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush after the link came back: %v", err)
	}
}
