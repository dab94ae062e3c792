package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go/wait"
)

// The images have no shell, so readiness is checked from the outside: a
// protocol exchange with the published port. A bare TCP connect is not
// enough, because Docker's userland proxy accepts connections on a
// published port before the server inside listens.

// ErrNotReady is returned by the wait strategies while the server does not
// answer yet, and wrapped into their final error.
var ErrNotReady = errors.New("harness: not ready")

const pollInterval = 100 * time.Millisecond

// probeStrategy polls probe against the published port until it succeeds,
// the container exits, or the context ends.
type probeStrategy struct {
	port  string
	name  string
	probe func(conn net.Conn) error
}

var _ wait.Strategy = (*probeStrategy)(nil)

// ForRESP waits until the server on port answers a RESP PING: +PONG, or an
// error other than LOADING (for example NOAUTH when a password is set).
// It serves Redis and the child.
func ForRESP(port string) wait.Strategy {
	return &probeStrategy{port: port, name: "RESP PING", probe: pingRESP}
}

// ForNATS waits until the NATS server on port sends its INFO line; with
// jetStream, the INFO must also announce JetStream.
func ForNATS(port string, jetStream bool) wait.Strategy {
	return &probeStrategy{port: port, name: "NATS INFO", probe: func(conn net.Conn) error {
		return natsInfo(conn, jetStream)
	}}
}

func (s *probeStrategy) String() string { return s.name + " on " + s.port }

func (s *probeStrategy) WaitUntilReady(ctx context.Context, target wait.StrategyTarget) error {
	var last error
	for {
		if st, err := target.State(ctx); err == nil && !st.Running && st.Status != "created" {
			return fmt.Errorf("%s: container is %s (exit code %d)", s, st.Status, st.ExitCode)
		}
		last = s.try(ctx, target)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %w)", s, ctx.Err(), last)
		case <-time.After(pollInterval):
		}
	}
}

func (s *probeStrategy) try(ctx context.Context, target wait.StrategyTarget) error {
	p, err := target.MappedPort(ctx, s.port)
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(LocalHost.String(), p.Port()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	return s.probe(conn)
}

func pingRESP(conn net.Conn) error {
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	switch {
	case strings.HasPrefix(line, "+"):
		return nil
	case strings.HasPrefix(line, "-LOADING"), strings.HasPrefix(line, "-BUSY"):
		return fmt.Errorf("%w: %s", ErrNotReady, strings.TrimSpace(line))
	case strings.HasPrefix(line, "-"):
		return nil // it answers; NOAUTH and the like are the caller's business
	}
	return fmt.Errorf("%w: unexpected reply %q", ErrNotReady, line)
}

func natsInfo(conn net.Conn, jetStream bool) error {
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	body, ok := strings.CutPrefix(line, "INFO ")
	if !ok {
		return fmt.Errorf("%w: unexpected greeting %q", ErrNotReady, line)
	}
	if !jetStream {
		return nil
	}
	var info struct {
		JetStream bool `json:"jetstream"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(body)), &info); err != nil {
		return fmt.Errorf("%w: INFO: %w", ErrNotReady, err)
	}
	if !info.JetStream {
		return fmt.Errorf("%w: JetStream not enabled yet", ErrNotReady)
	}
	return nil
}
