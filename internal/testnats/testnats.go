// Package testnats starts real NATS servers with JetStream for tests.
package testnats

import (
	"net"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/globalreplica/globalreplica/internal/embednats"
)

// Server is a NATS server with JetStream run for one test.
type Server struct {
	*server.Server
	dir  string
	opts embednats.Options
	t    testing.TB
}

// Start starts a server on a free loopback port with JetStream storage in a
// temporary folder; it is shut down when the test ends.
func Start(t testing.TB, name string) *Server { return StartAuth(t, name, "", "") }

// StartAuth is Start with a user and password required of clients.
func StartAuth(t testing.TB, name, user, password string) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), t: t}
	s.opts = embednats.Options{Name: name, StoreDir: s.dir, User: user, Password: password}
	s.start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := embednats.Start(s.opts)
	if err != nil {
		s.t.Fatal(err)
	}
	s.Server = srv
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
}

// URL returns the client URL.
func (s *Server) URL() string { return s.ClientURL() }

// Restart shuts the server down and starts it again on the same port with
// the same storage, as a region's NATS restart does.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.WaitForShutdown()
	s.start()
}

// Connect returns a client connection and its JetStream context that
// reconnect forever; closed when the test ends.
func (s *Server) Connect() (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50e6), nats.UserInfo(s.opts.User, s.opts.Password))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	return nc, js
}
