package harness

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// These tests need no Docker engine.

// serve runs a fake server on one end of a pipe: it answers any request
// with reply (after reading the request when read is set).
func serve(t *testing.T, reply string, read bool) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { _ = client.Close() })
	go func() {
		defer func() { _ = server.Close() }()
		if read {
			buf := make([]byte, 64)
			if _, err := server.Read(buf); err != nil {
				return
			}
		}
		_, _ = io.WriteString(server, reply)
	}()
	return client
}

func TestPingRESP(t *testing.T) {
	for _, tc := range []struct {
		reply string
		ready bool
	}{
		{"+PONG\r\n", true},
		{"-NOAUTH Authentication required.\r\n", true},
		{"-LOADING Redis is loading the dataset in memory\r\n", false},
		{"-BUSY Redis is busy running a script\r\n", false},
		{"HTTP/1.1 400 Bad Request\r\n", false},
		{"", false}, // connection closed without a reply: Docker's proxy with nothing behind it
	} {
		err := pingRESP(serve(t, tc.reply, true))
		if got := err == nil; got != tc.ready {
			t.Errorf("reply %q: ready %v (err %v), want %v", tc.reply, got, err, tc.ready)
		}
		if err != nil && !errors.Is(err, ErrNotReady) {
			t.Errorf("reply %q: error %v does not wrap ErrNotReady", tc.reply, err)
		}
	}
}

func TestNATSInfo(t *testing.T) {
	withJS := `INFO {"server_id":"x","version":"2.15.2","jetstream":true}` + "\r\n"
	withoutJS := `INFO {"server_id":"x","version":"2.15.2"}` + "\r\n"
	for _, tc := range []struct {
		greeting  string
		jetStream bool
		ready     bool
	}{
		{withJS, true, true},
		{withoutJS, false, true},
		{withoutJS, true, false},
		{"-ERR 'Authorization Violation'\r\n", false, false},
		{"", false, false},
	} {
		err := natsInfo(serve(t, tc.greeting, false), tc.jetStream)
		if got := err == nil; got != tc.ready {
			t.Errorf("greeting %q, jetstream %v: ready %v (err %v), want %v", tc.greeting, tc.jetStream, got, err, tc.ready)
		}
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: want 5 distinct ports", ports)
		}
		seen[p] = true
	}
}

func TestPortTaken(t *testing.T) {
	for msg, want := range map[string]bool{
		"Bind for 127.0.0.1:40000 failed: port is already allocated":                                  true,
		"listen tcp4 127.0.0.1:40000: bind: address already in use":                                   true,
		"wait until ready: RESP PING on 6379/tcp: context deadline exceeded (last: connection reset)": false,
	} {
		if got := portTaken(errors.New(msg)); got != want {
			t.Errorf("portTaken(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestDockerNameRules(t *testing.T) {
	for name, ok := range map[string]bool{
		"redis-sgp": true, "nats": true, "a": true,
		"": false, "Redis": false, "-x": false, "a_b": false, strings.Repeat("a", 42): false,
	} {
		if got := nameRE.MatchString(name); got != ok {
			t.Errorf("name %q accepted %v, want %v", name, got, ok)
		}
	}
}
