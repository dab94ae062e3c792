package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Scenarios 4 and 5 of issue 6: a region's Redis master killed (automatic
// failover by `channel-manager run`), and a region's data wiped (rebuilt
// with `channel-manager rebuild <region> --from <peer>`). They run after
// the other scenarios, on the same topology. When the channel-manager
// built from this tree lacks the commands they need, they fail with a
// message that says so (they never skip).

func init() {
	register(scenario{num: 4, name: "redis-master-killed", run: scenarioMasterKilled, late: true})
	register(scenario{num: 5, name: "region-wiped", run: scenarioRegionWiped, late: true})
}

// requireCommand fails the test unless channel-manager has the command
// (and, when given, the flag of that command).
func requireCommand(t *testing.T, top *topology, command, flag string) {
	t.Helper()
	root := top.help(t)
	if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(command) + `\s`).MatchString(root) {
		t.Fatalf("channel-manager has no %q command (its --help lists none): this scenario needs it; commands:\n%s", command, root)
	}
	if flag != "" && !strings.Contains(top.help(t, command), flag) {
		t.Fatalf("channel-manager %s has no %s flag: this scenario needs it", command, flag)
	}
}

// regionRecord is a region of `channel-manager region list --json`.
type regionRecord struct {
	ID       string `json:"id"`
	Redis    string `json:"redis"`
	Replica  string `json:"replica"`
	Children int    `json:"children"`
}

func (top *topology) regionRecord(t testing.TB, id string) regionRecord {
	t.Helper()
	out := top.cli(t, 0, "region", "list", "--json")
	var rs []regionRecord
	if err := json.Unmarshal([]byte(jsonArrayPart(out)), &rs); err != nil {
		t.Fatalf("region list --json: %v; output:\n%s", err, out)
	}
	for _, r := range rs {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("region list: no region %s in\n%s", id, out)
	return regionRecord{}
}

func jsonArrayPart(out string) string {
	if i := strings.Index(out, "["); i >= 0 {
		return out[i:]
	}
	return out
}

// replication returns a Redis server's INFO replication fields.
func replication(t testing.TB, addr string) map[string]string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, ReadTimeout: 3 * time.Second, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	info, err := c.Info(t.Context(), "replication").Result()
	m := map[string]string{}
	if err != nil {
		m["error"] = err.Error()
		return m
	}
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// 4. A region's Redis master killed under load: the control loop fails the
// region over to its replica by itself, no OpID is issued twice, the
// regions converge, and the old master, started again, becomes the new
// replica.
func scenarioMasterKilled(t *testing.T, top *topology) outcome {
	requireCommand(t, top, "failover", "")
	if !strings.Contains(top.help(t, "run"), "--auto-failover") {
		t.Fatalf("channel-manager run has no automatic failover (no --auto-failover flag): this scenario needs it")
	}
	r := top.byID["fra"]
	master, replica := r.redis, r.replica
	waitFor(t, 30*time.Second, "fra's replica in sync before the kill", func() (bool, string) {
		m := replication(t, replica.Addr())
		return m["master_link_status"] == "up", fmt.Sprint(m)
	})

	before := top.mustSnapshot(t)
	led := newLedger()
	// The master dies between applying a write and answering it: such a
	// write's error reply hides an applied increment. And a write
	// acknowledged by the master but neither replicated nor shipped when
	// it died is lost with it (asynchronous replication): counted and
	// reported, not failed.
	led.errorsUncertain, led.lossAllowed = true, true
	l := top.startLoad(t.Context(), loadSpec{prefix: "s4", workers: 3, ops: 400, pause: 2 * time.Millisecond, seed: 4, ledger: led})
	l.waitProgress(t, 0.3)
	seqBefore := top.mustSnapshot(t)[r.id].seq

	master.Kill()
	killed := time.Now()
	waitFor(t, 90*time.Second, "automatic failover: fra's replica promoted and fra serving writes", func() (bool, string) {
		m := replication(t, replica.Addr())
		if m["role"] != "master" {
			return false, fmt.Sprint(m)
		}
		err := r.app.Set(t.Context(), "s4:probe", "1", 0).Err()
		return err == nil, fmt.Sprintf("replica role %s; write through the child: %v", m["role"], err)
	})
	failedOver := time.Since(killed)
	rec := top.regionRecord(t, r.id)
	if rec.Redis != r.replicaAdr || rec.Replica != r.redisAddr {
		t.Fatalf("desired state of %s after the failover: master %s, replica %s; want %s and %s", r.id, rec.Redis, rec.Replica, r.replicaAdr, r.redisAddr)
	}
	// No OpID issued twice: the sequence goes on past what the old master
	// had issued (checkStreams then checks every op of the stream).
	if s := top.mustSnapshot(t)[r.id].seq; s <= seqBefore {
		t.Fatalf("%s's sequence after the failover is %d, not past %d issued before the kill", r.id, s, seqBefore)
	}

	// The old master comes back: it must become the new master's replica.
	master.Start()
	waitFor(t, 90*time.Second, "the old master to become the new replica", func() (bool, string) {
		m := replication(t, master.Addr())
		return m["role"] == "slave" && m["master_host"]+":"+m["master_port"] == r.replicaAdr && m["master_link_status"] == "up", fmt.Sprint(m)
	})
	r.redis, r.replica = replica, master
	r.redisAddr, r.replicaAdr = r.replicaAdr, r.redisAddr

	l.wait()
	end := time.Now()
	o := top.finish(t, before, l, end)
	o.note = strings.TrimPrefix(o.note+fmt.Sprintf("; failed over %s after the kill", failedOver.Round(100*time.Millisecond)), "; ")
	return o
}

// 5. A region's data wiped (its Redis master and, through replication, its
// replica flushed): `channel-manager rebuild` refills it from a peer while
// the other regions keep writing, and the region serves again with
// nothing lost.
func scenarioRegionWiped(t *testing.T, top *topology) outcome {
	requireCommand(t, top, "rebuild", "--from")
	r, peer := top.byID["iad"], top.byID["sgp"]
	before := top.mustSnapshot(t)
	led := newLedger()
	others := top.startLoad(t.Context(), loadSpec{prefix: "s5", regions: []string{"sgp", "fra"}, workers: 2, ops: 900, pause: 3 * time.Millisecond, seed: 5, ledger: led})
	// The region writes too, then stops before the wipe and lets its op
	// log drain into its stream: an acknowledged write still only in the
	// wiped Redis would be lost with it, by nature.
	local := top.startLoad(t.Context(), loadSpec{prefix: "s5", regions: []string{r.id}, workers: 2, ops: 100, seed: 50, ledger: led})
	local.wait()
	waitFor(t, 30*time.Second, "iad's op log shipped", func() (bool, string) {
		ri, err := r.info(t.Context())
		return err == nil && ri.backlog == 0, fmt.Sprint(ri.backlog, err)
	})

	raw := redis.NewClient(&redis.Options{Addr: r.redis.Addr(), MaxRetries: -1})
	defer func() { _ = raw.Close() }()
	if err := raw.FlushAll(t.Context()).Err(); err != nil {
		t.Fatalf("FLUSHALL on %s's master: %v", r.id, err)
	}
	wiped := time.Now()
	// Writes to the wiped region meanwhile must be refused (TRYAGAIN), or
	// acknowledged and kept: never acknowledged and lost.
	during := top.startLoad(t.Context(), loadSpec{prefix: "s5", regions: []string{r.id}, workers: 1, ops: 150, pause: 20 * time.Millisecond, seed: 51, ledger: led})

	if others.done() {
		t.Fatal("the other regions' writers finished before the rebuild began: give them more ops")
	}
	atStart := others.progress()
	out := top.cli(t, 0, "rebuild", r.id, "--from", peer.id, "--json", "--quiet", "--timeout", "3m")
	rebuilt := time.Since(wiped)
	atEnd := others.progress()
	var v struct {
		Phase       string `json:"phase"`
		KeysCopied  int64  `json:"keys_copied"`
		OpsReplayed uint64 `json:"ops_replayed"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &v); err != nil {
		t.Fatalf("rebuild --json: %v; output:\n%s", err, out)
	}
	if v.Phase != "done" || v.KeysCopied == 0 {
		t.Fatalf("rebuild of %s from %s: phase %q, %d keys copied; output:\n%s", r.id, peer.id, v.Phase, v.KeysCopied, out)
	}
	waitFor(t, 60*time.Second, "iad serving writes after the rebuild", func() (bool, string) {
		err := r.app.Set(t.Context(), "s5:probe", "1", 0).Err()
		return err == nil, fmt.Sprint(err)
	})
	during.wait()
	others.wait()
	end := time.Now()
	if n := led.netErrs.Load(); n > 0 {
		t.Fatalf("%d writes failed with a network error: no container was stopped; first: %v", n, led.firstNetErr.Load())
	}
	o := top.finish(t, before, others, end)
	o.written = led.written.Load()
	o.note = strings.TrimPrefix(o.note+fmt.Sprintf("; rebuilt in %s (%d keys copied, %d ops replayed) while 2 regions wrote (their writers from %.0f%% to %.0f%% done)",
		rebuilt.Round(100*time.Millisecond), v.KeysCopied, v.OpsReplayed, atStart*100, atEnd*100), "; ")
	return o
}
