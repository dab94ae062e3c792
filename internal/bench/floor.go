package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/tidwall/redcon"
)

// floorServer is the least any endpoint built like the child (Go, the
// redcon RESP server) can cost: a RESP server that answers redis-benchmark's
// commands with constant replies, storing nothing and calling nothing. Run
// side by side with raw Redis and the child it bounds what the child's
// ratio to raw Redis can be on this machine: the child does all the work
// this server does, and forwards each command to Redis besides.
type floorServer struct {
	ln  net.Listener
	srv *redcon.Server
	err chan error
}

// startFloor starts a floor server on a free loopback port.
func startFloor() (*floorServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: floor server: %w", err)
	}
	f := &floorServer{ln: ln, err: make(chan error, 1)}
	f.srv = redcon.NewServer("", floorHandle, nil, nil)
	go func() { f.err <- f.srv.Serve(ln) }()
	return f, nil
}

// floorHandle answers GET with a 3-byte value, INCR with 1, CONFIG GET
// (which redis-benchmark sends first) with an empty list and everything
// else with OK.
func floorHandle(conn redcon.Conn, cmd redcon.Command) {
	switch name := cmd.Args[0]; {
	case bytes.EqualFold(name, []byte("GET")):
		conn.WriteBulkString("xxx")
	case bytes.EqualFold(name, []byte("INCR")):
		conn.WriteInt(1)
	case bytes.EqualFold(name, []byte("CONFIG")):
		conn.WriteArray(0)
	default:
		conn.WriteString("OK")
	}
}

// Addr returns the server's host:port.
func (f *floorServer) Addr() string { return f.ln.Addr().String() }

// Close stops the server and returns the error that ended it, if any.
func (f *floorServer) Close() error {
	_ = f.srv.Close() // marks it done and closes the listener, once Serve runs
	_ = f.ln.Close()  // in case Serve had not started yet
	if err := <-f.err; err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
