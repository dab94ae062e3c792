package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The scenarios of issue 6 run one after the other on one shared topology
// (starting 14 containers per scenario would cost more than the scenarios
// themselves). Each is a subtest: it first restores the topology (every
// container running and attached), then writes, injects its fault, and
// ends with the same checks: the channels drain, `channel-manager verify`
// passes, every counter shows exactly the increments acknowledged, and
// every region's stream holds its ops under their own OpIDs. Each prints
// one summary line: ops written, ops applied, time to converge.
//
//	go test -race -count=1 -v -run 'TestScenarios' ./e2e/
//	go test -race -count=1 -v -run 'TestScenarios/partition' ./e2e/   # one scenario (plus the topology)

// scenario is one scenario of the suite; files register theirs in init.
type scenario struct {
	num  int // the number: the order of the run
	name string
	run  func(t *testing.T, top *topology) outcome
	// late scenarios run after the others (they change the topology more:
	// a failover swaps a region's master and replica).
	late bool
}

// outcome is what a scenario reports in its summary line.
type outcome struct {
	written  int64         // write commands acknowledged by the children
	issued   uint64        // ops the regions issued (sequence numbers)
	applied  uint64        // remote ops applied, summed over the regions
	converge time.Duration // from the end of the writes (or the last fault) until the channels drained
	note     string
}

var scenarios []scenario

func register(s scenario) { scenarios = append(scenarios, s) }

func init() {
	register(scenario{num: 1, name: "conflicts", run: scenarioConflicts})
	register(scenario{num: 2, name: "partition", run: scenarioPartition})
	register(scenario{num: 3, name: "child-killed", run: scenarioChildKilled})
	register(scenario{num: 6, name: "nats-restarted", run: scenarioNATSRestarted})
	register(scenario{num: 7, name: "bad-input", run: scenarioBadInput})
}

func TestScenarios(t *testing.T) {
	start := time.Now()
	top := newTopology(t)
	slices.SortFunc(scenarios, func(a, b scenario) int {
		if a.late != b.late {
			if a.late {
				return 1
			}
			return -1
		}
		return a.num - b.num
	})
	var lines []string
	for _, sc := range scenarios {
		name := fmt.Sprintf("%d-%s", sc.num, sc.name)
		ok := t.Run(name, func(t *testing.T) {
			defer top.env.Scope(t)()
			top.restore(t)
			began := time.Now()
			o := sc.run(t, top)
			line := fmt.Sprintf("scenario %-18s ops written %6d (issued %6d), ops applied %6d, converged in %7s, scenario %6s",
				name, o.written, o.issued, o.applied, o.converge.Round(time.Millisecond), time.Since(began).Round(100*time.Millisecond))
			if o.note != "" {
				line += "; " + o.note
			}
			t.Log(line)
			lines = append(lines, line)
		})
		if !ok {
			lines = append(lines, fmt.Sprintf("scenario %-18s FAILED (see its log)", name))
		}
	}
	summary := fmt.Sprintf("summary (topology up in %s, total %s):\n  %s", top.started.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond), strings.Join(lines, "\n  "))
	t.Log(summary)
	// go test shows a passing package's output only with -v: the summary
	// can also go to a file.
	if path := os.Getenv(envSummary); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), summary)
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			t.Errorf("%s: %v", envSummary, err)
		}
	}
}

// envSummary names a file that TestScenarios appends its summary to.
const envSummary = "GR_E2E_SUMMARY"

// finish ends every scenario: wait for the channels to drain, verify,
// check the counters and the streams, and build the outcome.
func (top *topology) finish(t *testing.T, before snapshot, l *load, writesEnded time.Time) outcome {
	t.Helper()
	after, _ := top.waitConverged(t, convergeTimeout)
	converge := time.Since(writesEnded)
	top.verify(t)
	top.checkCounters(t, l.ledger)
	top.checkStreams(t, before, after)
	led := l.ledger
	o := outcome{
		written:  led.written.Load(),
		issued:   after.issuedSince(before),
		applied:  after.appliedSince(before),
		converge: converge,
	}
	// Every op issued in one region is applied in each of the others.
	if want := o.issued * uint64(len(top.regions)-1); o.applied != want {
		t.Fatalf("ops applied %d, want %d (every op issued, in each of the other %d regions)", o.applied, want, len(top.regions)-1)
	}
	if n := led.refused.Load() + led.netErrs.Load(); n > 0 {
		o.note = fmt.Sprintf("%d error replies, %d network errors (%d not sent)", led.refused.Load(), led.netErrs.Load(), led.notSent.Load())
	}
	if led.lost > 0 {
		o.note += fmt.Sprintf("; %d acknowledged increments lost", led.lost)
	}
	return o
}

func (top *topology) mustSnapshot(t testing.TB) snapshot {
	t.Helper()
	s, err := top.snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func noNetErrors(t testing.TB, l *load) {
	t.Helper()
	if n := l.ledger.netErrs.Load(); n > 0 {
		t.Fatalf("%d writes failed with a network error with no fault injected; first: %v", n, l.ledger.firstNetErr.Load())
	}
}

// 1. Concurrent conflicting writes of every supported type from all three
// regions on a hot keyspace.
func scenarioConflicts(t *testing.T, top *topology) outcome {
	before := top.mustSnapshot(t)
	conflictsBefore := top.conflictTotal(t)
	l := top.startLoad(t.Context(), loadSpec{prefix: "s1", workers: 4, ops: 250, hot: true, seed: 1})
	l.wait()
	end := time.Now()
	noNetErrors(t, l)
	o := top.finish(t, before, l, end)
	conflicts := top.conflictTotal(t) - conflictsBefore
	if conflicts <= 0 {
		t.Fatalf("the hot keyspace produced no conflict: the regions' writes never met (conflicts before %d)", conflictsBefore)
	}
	o.note = strings.TrimPrefix(o.note+fmt.Sprintf("; %d conflicts resolved", conflicts), "; ")
	return o
}

// conflictTotal is the number of conflicts every region resolved so far,
// from `channel-manager conflicts`.
func (top *topology) conflictTotal(t testing.TB) int64 {
	t.Helper()
	out := top.cli(t, 0, "conflicts", "--json", "--limit", "1")
	var v struct {
		Totals map[string]int64 `json:"totals"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &v); err != nil {
		t.Fatalf("conflicts --json: %v; output:\n%s", err, out)
	}
	var n int64
	for _, c := range v.Totals {
		n += c
	}
	return n
}

// 2. Partition: one region's WAN link cut while every region keeps
// writing; heal; the region resumes where it stopped, without a resync.
func scenarioPartition(t *testing.T, top *topology) outcome {
	r := top.byID["sgp"]
	before := top.mustSnapshot(t)
	l := top.startLoad(t.Context(), loadSpec{prefix: "s2", workers: 3, ops: 300, pause: 2 * time.Millisecond, seed: 2})
	l.waitProgress(t, 0.2)

	// Cut the WAN only: the region network keeps the region's own traffic
	// (child → Redis, child → its NATS) and the test's published ports.
	childIP, natsIP := r.child.IP(top.wan), r.nats.IP(top.wan)
	r.child.Disconnect(top.wan)
	r.nats.Disconnect(top.wan)
	cutAt := time.Now()
	cut := top.mustSnapshot(t)
	l.waitProgress(t, 0.7)
	time.Sleep(2 * time.Second) // let the cut outlast the fetch and reconnect timers
	during := top.mustSnapshot(t)
	// The cut is real: sgp's new ops reached nobody, and sgp received
	// nothing new (apart from what was in flight when it was cut).
	for _, o := range top.regions {
		if o == r {
			continue
		}
		if got := during[o.id].applied[r.id]; got >= during[r.id].seq {
			t.Fatalf("%s applied %s up to %d during the partition, all %s issued: the cut did not cut", o.id, r.id, got, r.id)
		}
		if got := during[r.id].applied[o.id]; got >= during[o.id].seq {
			t.Fatalf("%s applied %s up to %d during the partition, all %s issued: the cut did not cut", r.id, o.id, got, o.id)
		}
	}
	for _, o := range top.regions {
		if o != r {
			t.Logf("partition: %s issued up to %d, %s applied it up to %d; %s issued up to %d, %s applied it up to %d",
				r.id, during[r.id].seq, o.id, during[o.id].applied[r.id], o.id, during[o.id].seq, r.id, during[r.id].applied[o.id])
		}
	}

	r.nats.Connect(top.wan)
	r.child.Connect(top.wan)
	healed := time.Now()
	// A WAN cut that ends leaves the addresses as they were (the harness
	// restores them): the peers' TCP connections resume.
	if c, n := r.child.IP(top.wan), r.nats.IP(top.wan); c != childIP || n != natsIP {
		t.Fatalf("addresses on the WAN changed across the cut: child %s → %s, NATS %s → %s", childIP, c, natsIP, n)
	}

	// From the cut on, every applied position only moves forward and no
	// channel asks for a rebuild: the regions resume, they do not resync.
	prev := cut
	monitor := func(s snapshot) {
		for dest, di := range s {
			for origin, v := range di.applied {
				if p := prev[dest].applied[origin]; v < p {
					t.Fatalf("%s's applied position of %s went back from %d to %d: a resync, not a resume", dest, origin, p, v)
				}
			}
			for origin, st := range di.channels {
				if st == "needs-rebuild" {
					t.Fatalf("%s's channel from %s needs a rebuild after the partition healed", dest, origin)
				}
			}
		}
		prev = s
	}
	for !l.done() {
		monitor(top.mustSnapshot(t))
		time.Sleep(200 * time.Millisecond)
	}
	l.wait()
	end := time.Now()
	noNetErrors(t, l)
	for {
		s := top.mustSnapshot(t)
		monitor(s)
		if ok, _ := s.converged(); ok || time.Since(end) > convergeTimeout {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	drained := time.Now()
	o := top.finish(t, before, l, end)
	o.note = strings.TrimPrefix(o.note+fmt.Sprintf("; WAN cut for %s, drained %s after the heal",
		healed.Sub(cutAt).Round(100*time.Millisecond), drained.Sub(healed).Round(100*time.Millisecond)), "; ")
	return o
}

// 3. A child container killed (SIGKILL) and restarted mid-stream: no
// acknowledged write lost, no increment counted twice.
func scenarioChildKilled(t *testing.T, top *topology) outcome {
	r := top.byID["fra"]
	before := top.mustSnapshot(t)
	l := top.startLoad(t.Context(), loadSpec{prefix: "s3", workers: 3, ops: 300, seed: 3})
	l.waitProgress(t, 0.3)
	r.child.Kill()
	time.Sleep(time.Second) // writes to fra fail meanwhile; the others go on
	r.child.Start()
	l.wait()
	end := time.Now()
	o := top.finish(t, before, l, end)
	if o.note == "" {
		o.note = "no write met the dead child"
	}
	return o
}

// 6. A region's NATS server restarted under load: the child keeps serving
// writes (the op log holds them), ships them when NATS is back, and every
// channel from and to the region resumes.
func scenarioNATSRestarted(t *testing.T, top *topology) outcome {
	r := top.byID["iad"]
	before := top.mustSnapshot(t)
	l := top.startLoad(t.Context(), loadSpec{prefix: "s6", workers: 3, ops: 300, pause: time.Millisecond, seed: 6})
	l.waitProgress(t, 0.3)
	r.nats.Stop(10 * time.Second)
	time.Sleep(time.Second)
	r.nats.Start()
	l.wait()
	end := time.Now()
	noNetErrors(t, l) // NATS is not on the write path
	return top.finish(t, before, l, end)
}

// 7. Bad input through every region's endpoint while the regions write:
// clear errors in Redis's style, the connection closed only for a
// protocol error, the containers keep serving, nothing lost.
func scenarioBadInput(t *testing.T, top *topology) outcome {
	before := top.mustSnapshot(t)
	l := top.startLoad(t.Context(), loadSpec{prefix: "s7", workers: 2, ops: 200, seed: 7})
	for _, r := range top.regions {
		badInput(t, r)
	}
	l.wait()
	end := time.Now()
	noNetErrors(t, l)
	for _, c := range top.containers() {
		if !c.Running() {
			t.Fatalf("%s stopped after the bad input", c.Alias)
		}
	}
	o := top.finish(t, before, l, end)
	// The refused oversized values were written nowhere.
	for _, r := range top.regions {
		if n, err := r.app.Exists(t.Context(), "s7:big:sgp", "s7:big:fra", "s7:big:iad").Result(); err != nil || n != 0 {
			t.Fatalf("%s: refused oversized values exist: %d, %v", r.id, n, err)
		}
	}
	return o
}

// badInput sends one region's child malformed and refused input over raw
// connections and checks every answer.
func badInput(t *testing.T, r *region) {
	t.Helper()
	c := dialRESP(t, r.child.Addr())
	expect := func(req, wantPrefix string) {
		t.Helper()
		got := c.roundTrip(t, req)
		if !strings.HasPrefix(got, wantPrefix) {
			t.Fatalf("%s: %q answered %q, want %q...", r.id, shorten(req), got, wantPrefix)
		}
	}
	// Refused commands name the reason; the connection stays usable.
	for _, cmd := range []string{"FLUSHALL", "FLUSHDB", "MULTI", "RENAME a b", "BLPOP l 0", "CONFIG SET maxmemory 1", "REPLICAOF no one"} {
		name := strings.Fields(cmd)[0]
		expect(resp(strings.Fields(cmd)...), "-ERR "+name+" is not supported in active-active mode: ")
	}
	expect(resp("EVAL", "return 1", "0"), "-ERR EVAL is not supported in active-active mode: ")
	expect(resp("NOSUCHCMD", "x"), "-ERR unknown command 'NOSUCHCMD'")
	expect(resp("GET"), "-ERR wrong number of arguments for 'get' command")
	expect(resp("SET", "s7:str:"+r.id, "v"), "+OK")
	expect(resp("HSET", "s7:str:"+r.id, "f", "v"), "-WRONGTYPE Operation against a key holding the wrong kind of value")
	expect(resp("INCR", "s7:str:"+r.id), "-ERR value is not an integer or out of range")
	// An oversized value is refused, read to its end, and the connection
	// goes on.
	big := strings.Repeat("x", maxValueBytes+1)
	expect(resp("SET", "s7:big:"+r.id, big), fmt.Sprintf("-ERR value is too large (max %d bytes)", maxValueBytes))
	expect(resp("HSET", "s7:big:"+r.id, "f", big), "-ERR value is too large")
	expect(resp("PING"), "+PONG")
	expect("PING\r\n", "+PONG") // inline
	c.close()

	// Malformed protocol: Redis's protocol error, then the connection is
	// closed; the server goes on.
	for _, bad := range []string{
		"*2\r\n$3\r\nGET\r\n$x\r\n", // bulk length not a number
		"*1\r\n$2147483648\r\n",     // bulk length beyond any limit
		"*abc\r\n",                  // multibulk length not a number
		"SET \"unbalanced x\r\n",    // inline with unbalanced quotes
		"*1\r\n+PING\r\n",           // a simple string where a bulk is expected
	} {
		c := dialRESP(t, r.child.Addr())
		got := c.roundTrip(t, bad)
		if !strings.HasPrefix(got, "-ERR Protocol error") {
			t.Fatalf("%s: malformed %q answered %q, want -ERR Protocol error...", r.id, bad, got)
		}
		if !c.closedByPeer() {
			t.Fatalf("%s: connection still open after the protocol error for %q", r.id, bad)
		}
		c.close()
	}
	// The child serves on: a fresh client works.
	if err := r.app.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("%s: PING after the bad input: %v", r.id, err)
	}
}

// respConn is a raw RESP connection for the bad-input checks.
type respConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialRESP(t testing.TB, addr string) *respConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return &respConn{conn: conn, br: bufio.NewReader(conn)}
}

// roundTrip sends req and returns the first line of the reply.
func (c *respConn) roundTrip(t testing.TB, req string) string {
	t.Helper()
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.conn, req); err != nil {
		t.Fatalf("write %q: %v", shorten(req), err)
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("reply to %q: %v", shorten(req), err)
	}
	return strings.TrimRight(line, "\r\n")
}

// closedByPeer reports whether the server closed the connection (EOF
// within a few seconds, nothing more to read).
func (c *respConn) closedByPeer() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	return err == io.EOF || (err != nil && strings.Contains(err.Error(), "reset"))
}

func (c *respConn) close() { _ = c.conn.Close() }

// resp encodes a command as a RESP array of bulk strings.
func resp(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func shorten(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// natsOf returns the test's connection to a region's NATS (through its
// published port), made once and kept for the whole topology: it
// reconnects by itself after a restart.
func (top *topology) natsOf(t testing.TB, r *region) *nats.Conn {
	t.Helper()
	if nc := top.ncs[r.id]; nc != nil {
		return nc
	}
	nc, err := nats.Connect(r.natsURL, nats.Timeout(5*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to NATS of %s: %v", r.id, err)
	}
	top.t.Cleanup(nc.Close)
	top.ncs[r.id] = nc
	return nc
}
