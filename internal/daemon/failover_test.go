package daemon

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
	"github.com/globalreplica/globalreplica/internal/workload"
	"github.com/globalreplica/globalreplica/manager"
)

// load writes to one region until stopped: INCRBY n 1, HINCRBY h <region>
// 1 and HSET s <region>:<i> <i>, and counts what was acknowledged.
type load struct {
	region string
	stop   chan struct{}
	done   chan struct{}

	mu    sync.Mutex
	acked int // acknowledged rounds (each one increment of n and of h[region])
	err   error
}

func startLoad(c *redis.Client, region string) *load {
	l := &load{region: region, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			err := c.IncrBy(ctx, "n", 1).Err()
			if err == nil {
				err = c.HIncrBy(ctx, "h", region, 1).Err()
			}
			if err == nil {
				err = c.HSet(ctx, "s", fmt.Sprintf("%s:%d", region, i), i).Err()
			}
			l.mu.Lock()
			if err != nil {
				l.err = fmt.Errorf("write %d to %s: %w", i, region, err)
				l.mu.Unlock()
				return
			}
			l.acked++
			l.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return l
}

// halt stops the load and returns its acknowledged rounds; a write error
// fails the test.
func (l *load) halt(t *testing.T) int {
	t.Helper()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.acked
}

// streamIDs reads every op of region's stream and fails the test unless
// each op's OpID names the region and its sequence is the op's stream
// sequence (so no OpID is in the stream twice and none is missing). It
// returns the last sequence.
func streamIDs(t *testing.T, ns *testnats.Server, region string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, js := ns.Connect()
	st, err := js.Stream(ctx, channel.StreamName("shop", region))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != 1 || info.State.Msgs != info.State.LastSeq {
		t.Fatalf("stream of %s: first %d, %d messages, last %d", region, info.State.FirstSeq, info.State.Msgs, info.State.LastSeq)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[crdt.OpID]bool{}
	for next := uint64(1); next <= info.State.LastSeq; {
		batch, err := cons.Fetch(int(min(500, info.State.LastSeq-next+1)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			id, err := crdt.PeekID(m.Data())
			if err != nil {
				t.Fatalf("stream seq %d: %v", md.Sequence.Stream, err)
			}
			if id.Region != region || id.Seq != md.Sequence.Stream || seen[id] {
				t.Fatalf("stream seq %d holds op %s (seen before: %v)", md.Sequence.Stream, id, seen[id])
			}
			seen[id] = true
			next = md.Sequence.Stream + 1
			n++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("stream of %s: stalled at %d of %d", region, next, info.State.LastSeq)
		}
	}
	return info.State.LastSeq
}

// replInfo returns a Redis's INFO replication fields.
func replInfo(t *testing.T, c *redis.Client) map[string]string {
	t.Helper()
	_, info, err := replication(context.Background(), c)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	return info
}

// failoverRegions starts the config store, region sgp with a master and a
// replica and two children, and regions fra and iad, all with channels.
func failoverRegions(t *testing.T) (s *manager.Store, master, replica *testredis.Server, sgp []*managedRegion, others []*managedRegion) {
	t.Helper()
	mgr := testnats.StartAuth(t, "mgr", "gr", "secret")
	_, js := mgr.Connect()
	ctx := context.Background()
	s, err := manager.Open(ctx, js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateInstance(ctx, manager.Instance{}); err != nil {
		t.Fatal(err)
	}
	master = testredis.Start(t)
	replica = master.StartReplica(t)
	ns := testnats.StartAuth(t, "sgp", "gr", "secret")
	sgp = []*managedRegion{startManagedOn(t, mgr, "sgp", ns, *master.Options()), startManagedOn(t, mgr, "sgp", ns, *master.Options())}
	others = []*managedRegion{startManaged(t, mgr, "fra"), startManaged(t, mgr, "iad")}
	if _, _, err := s.AddRegion(ctx, manager.Region{ID: "sgp", NATS: ns.URL(), Redis: master.Addr(), Replica: replica.Addr()}); err != nil {
		t.Fatal(err)
	}
	for _, r := range others {
		if _, _, err := s.AddRegion(ctx, manager.Region{ID: r.name, NATS: r.nats.URL(), Redis: r.d.Engine.Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "channels of every region", func() bool {
		for _, r := range append(others, sgp[0]) {
			if len(r.d.Statuses()) != 2 {
				return false
			}
		}
		return true
	})
	return s, master, replica, sgp, others
}

// TestAutomaticFailoverLaggingReplica: region sgp (two children, master +
// replica) fails over automatically while fra and iad keep writing; its
// replica had missed sgp's last ops, which are in sgp's stream. Writes on
// sgp resume on the promoted replica with the sequence right after the
// stream's last op; the missed ops are merged back; sgp's stream holds
// every OpID once; every acknowledged increment is counted exactly once in
// every region; the regions converge; the old master, restarted empty,
// becomes the new master's replica.
func TestAutomaticFailoverLaggingReplica(t *testing.T) {
	s, master, replica, sgp, others := failoverRegions(t)
	ctx := context.Background()
	fra, iad := others[0], others[1]

	loads := map[string]*load{"fra": startLoad(fra.c, "fra"), "iad": startLoad(iad.c, "iad"), "sgp": startLoad(sgp[0].c, "sgp")}
	time.Sleep(time.Second)
	counts := map[string]int{"sgp": loads["sgp"].halt(t)}

	// Cut the replica off (its master refuses it a resync), then write
	// more on sgp: the replica misses these ops.
	if err := master.Client().Do(ctx, "ACL", "SETUSER", "default", "-psync", "-sync").Err(); err != nil {
		t.Fatal(err)
	}
	if err := master.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replica's link down", func() bool { return replInfo(t, replica.Client())["master_link_status"] == "down" })
	const missed = 50
	for i := range missed {
		if err := sgp[0].c.IncrBy(ctx, "n", 1).Err(); err != nil {
			t.Fatal(err)
		}
		if err := sgp[1].c.HIncrBy(ctx, "h", "sgp", 1).Err(); err != nil {
			t.Fatal(err)
		}
		if err := sgp[0].c.SAdd(ctx, "missed", i).Err(); err != nil {
			t.Fatal(err)
		}
	}
	counts["sgp"] += missed
	pos, err := sgp[0].d.Engine.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sgp's ops shipped", func() bool { return streamIDs(t, sgp[0].nats, "sgp") == pos.Seq })
	replicaSeq, err := replica.Client().Do(ctx, "EVAL", "redis.call('SELECT', 1) return redis.call('HGET', 'meta', 'seq')", 0).Text()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pos.Seq) == replicaSeq {
		t.Fatalf("the replica did not lag (seq %s)", replicaSeq)
	}
	t.Logf("sgp at seq %d, its replica at %s, when the master dies", pos.Seq, replicaSeq)

	// The master dies. The control loop's round fails it over once every
	// child has seen it down for a second.
	master.Kill()
	killed := time.Now()
	var swapped manager.Region
	waitForIn(t, 20*time.Second, "the automatic failover", func() bool {
		done, _, err := s.AutoFailover(ctx, time.Now(), time.Second)
		if err != nil {
			t.Log(err)
		}
		if len(done) == 1 {
			swapped = done[0]
		}
		return len(done) == 1
	})
	if swapped.Redis != replica.Addr() || swapped.Replica != master.Addr() {
		t.Fatalf("swapped to %+v", swapped)
	}
	if since := time.Since(killed); since < time.Second {
		t.Fatalf("failed over %s after the kill, before every child saw the master down for a second", since)
	}
	// Writes resume on the new master, right after the stream's last op.
	waitForIn(t, 20*time.Second, "a write on sgp", func() bool {
		err := sgp[0].c.Set(ctx, "probe", "1", 0).Err()
		if err != nil && !strings.HasPrefix(err.Error(), "TRYAGAIN") && !strings.Contains(err.Error(), "closed") &&
			!strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "EOF") {
			t.Fatalf("write during the failover: %v", err)
		}
		return err == nil
	})
	after, err := sgp[0].d.Engine.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Seq != pos.Seq+1 {
		t.Fatalf("sgp's first op after the failover has seq %d, want %d (right after its stream)", after.Seq, pos.Seq+1)
	}
	for _, c := range sgp {
		waitFor(t, "child "+c.d.cfg.Owner+" on the new master", func() bool { return c.d.Engine.Addr() == replica.Addr() })
	}
	if _, err := s.WaitServing(ctx, swapped, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("sgp serves writes on its new master %s after the kill", time.Since(killed).Round(time.Millisecond))
	loads["sgp"] = startLoad(sgp[1].c, "sgp")
	time.Sleep(time.Second)

	// The old master comes back empty and becomes the new replica.
	master.Restart()
	waitForIn(t, 20*time.Second, "the old master replicating the new one", func() bool {
		info := replInfo(t, master.Client())
		return info["role"] == "slave" && info["master_port"] == fmt.Sprint(replica.Port) && info["master_link_status"] == "up"
	})

	for r, l := range loads {
		counts[r] += l.halt(t)
	}
	total := counts["sgp"] + counts["fra"] + counts["iad"]
	t.Logf("%s after the kill: checking %d increments (sgp %d, fra %d, iad %d)", time.Since(killed).Round(time.Millisecond), total, counts["sgp"], counts["fra"], counts["iad"])
	for _, r := range append(others, sgp...) {
		waitValue(t, r.c, "n", fmt.Sprint(total))
		for id, n := range counts {
			waitFor(t, fmt.Sprintf("%s: h[%s] = %d", r.name, id, n), func() bool {
				v, _ := r.c.HGet(ctx, "h", id).Result()
				return v == fmt.Sprint(n)
			})
		}
		if n, err := r.c.SCard(ctx, "missed").Result(); err != nil || n != missed {
			t.Fatalf("%s: %d of the %d members sgp's replica had missed (%v)", r.name, n, missed, err)
		}
	}
	t.Logf("%s after the kill: counted", time.Since(killed).Round(time.Millisecond))
	streamIDs(t, sgp[0].nats, "sgp")
	streamIDs(t, fra.nats, "fra")
	streamIDs(t, iad.nats, "iad")
	t.Logf("%s after the kill: streams checked", time.Since(killed).Round(time.Millisecond))
	converge(t, s)
	t.Logf("%s after the kill: converged", time.Since(killed).Round(time.Millisecond))
	waitFor(t, "the old master's data synced", func() bool {
		return master.Client().Exists(ctx, "n").Val() == 1
	})
}

// TestPlannedFailoverTwoChildren: a failover while the old master is up,
// with two children of the region doing it at once under writes to both:
// the old master is fenced and demoted, both children move to the new
// master, no acknowledged increment is lost or doubled, sgp's stream holds
// every OpID once and the regions converge.
func TestPlannedFailoverTwoChildren(t *testing.T) {
	s, master, replica, sgp, others := failoverRegions(t)
	ctx := context.Background()
	var loads []*workload.Incrementer
	for _, c := range []*redis.Client{sgp[0].c, sgp[1].c, others[0].c} {
		loads = append(loads, workload.StartIncrementer(c, "n", 2*time.Millisecond))
	}
	time.Sleep(500 * time.Millisecond)
	r := plannedFailover(t, s, "sgp")
	t.Logf("serving on the new master %s after the swap", time.Since(r.FailedOver).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	acked, refused, ambiguous := 0, 0, 0
	for _, l := range loads {
		n := l.Halt()
		acked, refused, ambiguous = acked+n.Acked, refused+n.Refused, ambiguous+n.Ambiguous
	}
	t.Logf("increments: %d acknowledged, %d refused, %d ambiguous", acked, refused, ambiguous)
	for _, c := range sgp {
		waitFor(t, "child "+c.d.cfg.Owner+" on the new master", func() bool { return c.d.Engine.Addr() == replica.Addr() })
	}
	if info := replInfo(t, master.Client()); info["role"] != "slave" || info["master_port"] != fmt.Sprint(replica.Port) {
		t.Fatalf("the old master was not demoted: %v", info)
	}
	converge(t, s)
	for _, c := range append(others, sgp...) {
		n, err := c.c.Get(ctx, "n").Int()
		if err != nil || n < acked || n > acked+ambiguous {
			t.Fatalf("%s: n = %d (%v) after %d acknowledged and %d ambiguous increments", c.name, n, err, acked, ambiguous)
		}
	}
	streamIDs(t, sgp[0].nats, "sgp")
}

// plannedFailover fails region over (channel-manager failover) and waits
// until it serves on its new master.
func plannedFailover(t *testing.T, s *manager.Store, region string) manager.Region {
	t.Helper()
	ctx := context.Background()
	r, err := s.Failover(ctx, region)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := s.WaitServing(wctx, r, 0); err != nil {
		t.Fatal(err)
	}
	return r
}

// converge waits until manager.Verify reports every region equal.
func converge(t *testing.T, s *manager.Store) {
	t.Helper()
	ctx := context.Background()
	regions, err := s.Regions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	opts := manager.VerifyOptions{ControlOptions: manager.ControlOptions{Timeout: 10 * time.Second, Dial: func(url string) (*nats.Conn, error) {
		return nats.Connect(url, nats.UserInfo("gr", "secret"))
	}}}
	var rep manager.VerifyReport
	waitForIn(t, 20*time.Second, "manager verify", func() bool {
		rep, err = manager.Verify(ctx, "shop", regions, opts)
		return err == nil && rep.Equal
	})
}

// waitForIn polls cond until it holds or d passes.
func waitForIn(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReplicaLink(t *testing.T) {
	for _, tc := range []struct {
		info map[string]string
		want string
	}{
		{map[string]string{"role": "slave", "master_host": "10.0.0.1", "master_port": "6379", "master_link_status": "up"}, "up"},
		{map[string]string{"role": "slave", "master_host": "10.0.0.1", "master_port": "6379", "master_link_status": "down"}, "down"},
		{map[string]string{"role": "slave", "master_host": "10.0.0.2", "master_port": "6379", "master_link_status": "up"}, "not a replica of 10.0.0.1:6379 (replica of 10.0.0.2:6379)"},
		{map[string]string{"role": "master"}, "not a replica of 10.0.0.1:6379 (role master)"},
	} {
		if got := replicaLink(tc.info, "10.0.0.1:6379"); got != tc.want {
			t.Errorf("replicaLink(%v) = %q, want %q", tc.info, got, tc.want)
		}
	}
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{{"10", "9", true}, {"10", "10", true}, {"9", "10", false}, {"", "1", false}, {"1", "", false}} {
		if got := offsetAtLeast(tc.have, tc.want); got != tc.ok {
			t.Errorf("offsetAtLeast(%q, %q) = %v", tc.have, tc.want, got)
		}
	}
}

// TestFailoverSetsMasterauth: the region's Redis servers have a password,
// and the master (started as a master) has no masterauth. After a planned
// failover the old master, demoted to a replica of the new one, gets the
// password as its masterauth from the child, and its link comes up.
func TestFailoverSetsMasterauth(t *testing.T) {
	ctx := context.Background()
	mgr := testnats.StartAuth(t, "mgr", "gr", "secret")
	_, js := mgr.Connect()
	s, err := manager.Open(ctx, js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateInstance(ctx, manager.Instance{}); err != nil {
		t.Fatal(err)
	}
	master := testredis.Start(t, testredis.WithPassword("pw"))
	replica := master.StartReplica(t)
	ns := testnats.StartAuth(t, "sgp", "gr", "secret")
	sgp := startManagedOn(t, mgr, "sgp", ns, *master.Options())
	if _, _, err := s.AddRegion(ctx, manager.Region{ID: "sgp", NATS: ns.URL(), Redis: master.Addr(), Replica: replica.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a write on sgp", func() bool { return sgp.c.Set(ctx, "a", "1", 0).Err() == nil })
	if auth, err := master.Client().ConfigGet(ctx, "masterauth").Result(); err != nil || auth["masterauth"] != "" {
		t.Fatalf("the master has masterauth %q (%v) before the failover", auth["masterauth"], err)
	}
	plannedFailover(t, s, "sgp")
	waitForIn(t, 20*time.Second, "the old master's link to the new one up", func() bool {
		info := replInfo(t, master.Client())
		return info["role"] == "slave" && info["master_port"] == fmt.Sprint(replica.Port) && info["master_link_status"] == "up"
	})
	waitFor(t, "the write on the old master, synced back", func() bool {
		return master.Client().Get(ctx, "a").Val() != ""
	})
}
