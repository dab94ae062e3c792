package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/manager"
)

// Region rebuild (see manager/rebuild.go for the flow). Two sides:
//
//   - the peer's children serve exports over their control service
//     (child.CtlExport): a session records the position first, then scans
//     the keyspace in child.ExportPhases phases and hands out the export
//     stream in chunks, each key copied atomically (child.Engine.ExportPage);
//   - the target's children follow the rebuild request in the desired
//     state; the holder of the "rebuild" lease runs it (runRebuild).

// Tuning of rebuilds.
const (
	exportScanCount   = 100              // SCAN COUNT of one export step (one atomic call)
	exportIdle        = 2 * time.Minute  // an export session unused this long ends
	exportRequestWait = 60 * time.Second // bound of one export request
	rebuildLeaseTTL   = 15 * time.Second
	importBatchBytes  = 4 << 20 // records imported per call, by size
	replayPoll        = 200 * time.Millisecond
	// defaultChunkBytes leaves room in NATS's default 1 MB payload limit.
	defaultChunkBytes = 512 << 10
)

// --- the peer's side: export sessions -------------------------------------

type exportSession struct {
	d       *Daemon
	sub     *nats.Subscription
	chunk   int
	phase   int
	cursor  string
	buf     []byte
	keys    int64
	done    bool
	sent    uint64 // chunks handed out
	last    []byte // the last chunk, for a retry
	lastEnd bool
	timer   *time.Timer
	mu      sync.Mutex
}

// openExport starts an export session on nc and returns its description.
func (d *Daemon) openExport(ctx context.Context, nc *nats.Conn, req child.ExportRequest, log zerolog.Logger) (child.ExportReply, error) {
	lim := int(nc.MaxPayload()) - 4096
	if req.ChunkBytes <= 0 || req.ChunkBytes > lim {
		req.ChunkBytes = min(defaultChunkBytes, lim)
	}
	if req.ChunkBytes < 1024 {
		return child.ExportReply{}, fmt.Errorf("%w: chunk_bytes %d: at least 1024", errBadRequest, req.ChunkBytes)
	}
	// The position first: everything it counts is in the copy that follows.
	pos, err := d.Engine.Position(ctx)
	if err != nil {
		return child.ExportReply{}, err
	}
	n0, n1, err := d.Engine.KeyCounts(ctx)
	if err != nil {
		return child.ExportReply{}, err
	}
	s := &exportSession{d: d, chunk: req.ChunkBytes, cursor: "0"}
	subject := child.ControlSubject(d.cfg.Instance, d.cfg.Region) + ".export." + uuid.NewString()
	s.sub, err = nc.Subscribe(subject, func(m *nats.Msg) { s.serve(m, log) })
	if err != nil {
		return child.ExportReply{}, err
	}
	s.timer = time.AfterFunc(exportIdle, func() { _ = s.sub.Unsubscribe() })
	return child.ExportReply{
		Region: d.cfg.Region, Session: subject, Position: pos.Applied,
		Keys: n0 + n1, ChunkBytes: req.ChunkBytes,
	}, nil
}

// serve answers one ExportNext request.
func (s *exportSession) serve(m *nats.Msg, log zerolog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer.Reset(exportIdle)
	reply := nats.NewMsg(m.Reply)
	var req child.ExportNext
	err := json.Unmarshal(m.Data, &req)
	if err == nil {
		var data []byte
		var end bool
		data, end, err = s.next(req.Chunk)
		if err == nil {
			reply.Data = data
			reply.Header.Set(child.ExportHeaderKeys, strconv.FormatInt(s.keys, 10))
			if end {
				reply.Header.Set(child.ExportHeaderDone, "1")
				var ts crdt.Timestamp
				if ts, err = s.d.Engine.Clock(context.Background()); err == nil {
					reply.Header.Set(child.ExportHeaderClock, child.FormatClock(ts))
				}
			}
		}
	}
	if err != nil {
		reply.Header.Set(child.ExportHeaderError, err.Error())
	}
	if err := m.RespondMsg(reply); err != nil {
		log.Warn().Err(err).Msg("export chunk not sent")
	}
}

// next returns chunk number n: the next one, or the last one again.
func (s *exportSession) next(n uint64) ([]byte, bool, error) {
	switch {
	case s.sent > 0 && n == s.sent-1:
		return s.last, s.lastEnd, nil
	case n != s.sent:
		return nil, false, fmt.Errorf("export: chunk %d asked, %d expected", n, s.sent)
	}
	ctx, cancel := context.WithTimeout(context.Background(), exportRequestWait)
	defer cancel()
	for len(s.buf) < s.chunk && !s.done {
		next, recs, err := s.d.Engine.ExportPage(ctx, s.phase, s.cursor, exportScanCount)
		if err != nil {
			return nil, false, err
		}
		for i := range recs {
			s.buf = child.AppendRecord(s.buf, &recs[i])
		}
		s.keys += int64(len(recs))
		s.cursor = next
		if next == "0" {
			s.phase++
			s.done = s.phase == child.ExportPhases
		}
	}
	k := min(s.chunk, len(s.buf))
	s.last = append([]byte(nil), s.buf[:k]...)
	s.buf = append(s.buf[:0], s.buf[k:]...)
	s.lastEnd = s.done && len(s.buf) == 0
	s.sent++
	if s.lastEnd {
		s.timer.Reset(exportIdle / 4)
	}
	return s.last, s.lastEnd, nil
}

// --- the target's side ---------------------------------------------------------

// rebuildState is a child's part in its region's rebuilds.
type rebuildState struct {
	running  atomic.Bool                             // this process runs a rebuild
	hold     atomic.Bool                             // keep the inbound channels stopped
	progress atomic.Pointer[manager.RebuildProgress] // for the heartbeat
	finished sync.Map                                // ids of the rebuilds this process ran: a stale desired state must not start one again
}

// holdsChannels reports whether the region's inbound channels must stay
// stopped in the desired state st (a rebuild copies into the region).
func (m *managed) holdsChannels(st manager.State) bool {
	return m.rb.hold.Load() || st.Regions[m.d.cfg.Region].Rebuild.HoldsChannels()
}

// rebuildCheck starts the region's active rebuild in the background when
// this child gets the region's "rebuild" lease.
func (m *managed) rebuildCheck(ctx context.Context, store *manager.Store, st manager.State) {
	rb := st.Regions[m.d.cfg.Region].Rebuild
	if !rb.Active() || m.rb.running.Load() {
		return
	}
	if _, ran := m.rb.finished.Load(rb.ID); ran {
		return
	}
	lead, err := m.d.Engine.Lease(ctx, "rebuild", m.d.cfg.Owner, rebuildLeaseTTL)
	if err != nil || !lead || !m.rb.running.CompareAndSwap(false, true) {
		return
	}
	req := *rb
	go func() {
		defer m.rb.running.Store(false)
		m.runRebuild(ctx, store, st, req)
		if ctx.Err() == nil { // a child that stops part way lets its successor start over
			m.rb.finished.Store(req.ID, true)
		}
	}()
}

// setProgress updates the progress reported in the heartbeat.
func (m *managed) setProgress(f func(p *manager.RebuildProgress)) {
	p := manager.RebuildProgress{}
	if old := m.rb.progress.Load(); old != nil {
		p = *old
	}
	f(&p)
	m.rb.progress.Store(&p)
}

// runRebuild runs the rebuild req of this region and records its outcome.
func (m *managed) runRebuild(ctx context.Context, store *manager.Store, st manager.State, req manager.Rebuild) {
	log := m.log.With().Str("rebuild", req.ID).Str("from", req.From).Logger()
	m.rb.progress.Store(&manager.RebuildProgress{ID: req.ID, Phase: manager.RebuildCopying})
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lost atomic.Bool
	go func() { // keep the lease while running
		t := time.NewTicker(rebuildLeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if ok, err := m.d.Engine.Lease(ctx, "rebuild", m.d.cfg.Owner, rebuildLeaseTTL); err == nil && !ok {
					log.Error().Msg("lost the rebuild lease to another child")
					lost.Store(true)
					cancel()
				}
			}
		}
	}()
	log.Info().Msg("rebuild started")
	res, err := m.rebuild(ctx, store, st, req, log)
	m.rb.hold.Store(false)
	m.reapply(ctx)
	if parent.Err() != nil || lost.Load() {
		// This child stops (or another took over): the request stays
		// active, and whoever holds the lease next starts it over.
		log.Warn().Err(err).Msg("rebuild interrupted; the region's next lease holder starts it over")
		return
	}
	finish := func(rb *manager.Rebuild) error {
		rb.Finished = time.Now().UTC()
		if err != nil {
			rb.Phase, rb.Error = manager.RebuildFailed, err.Error()
		} else {
			rb.Phase, rb.Keys, rb.Replayed = manager.RebuildDone, res.keys, res.replayed
		}
		return nil
	}
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer ucancel()
	if _, uerr := store.UpdateRebuild(uctx, m.d.cfg.Region, req.ID, finish); uerr != nil {
		log.Error().Err(uerr).Msg("cannot record the rebuild's outcome")
	}
	m.setProgress(func(p *manager.RebuildProgress) {
		p.Phase = manager.RebuildDone
		if err != nil {
			p.Phase, p.Error = manager.RebuildFailed, err.Error()
		}
	})
	if err != nil {
		log.Error().Err(err).Msg("rebuild failed")
		return
	}
	log.Info().Int64("keys", res.keys).Uint64("replayed", res.replayed).Msg("rebuild done")
}

// reapply applies the last desired state again (to stop or start
// channels after the hold changed).
func (m *managed) reapply(ctx context.Context) {
	m.mu.Lock()
	last := m.last
	m.mu.Unlock()
	if last != nil {
		m.apply(ctx, *last)
	}
}

type rebuildResult struct {
	keys     int64
	replayed uint64
}

// rebuild does the work of runRebuild.
func (m *managed) rebuild(ctx context.Context, store *manager.Store, st manager.State, req manager.Rebuild, log zerolog.Logger) (rebuildResult, error) {
	var res rebuildResult
	self := m.d.cfg.Region
	eng := m.d.Engine
	peer, ok := st.Regions[req.From]
	if !ok {
		return res, fmt.Errorf("%w: %s (the peer)", manager.ErrNoRegion, req.From)
	}
	// 1. Stop this child's inbound channels and tell the others.
	m.rb.hold.Store(true)
	m.reapply(ctx)
	if _, err := store.UpdateRebuild(ctx, self, req.ID, func(rb *manager.Rebuild) error {
		rb.Phase, rb.Owner, rb.Started, rb.Error = manager.RebuildCopying, m.d.cfg.Owner, time.Now().UTC(), ""
		return nil
	}); err != nil {
		return res, err
	}
	// Other children of the region stop theirs when they see the phase:
	// wait for their receiver leases so that none applies meanwhile.
	var origins []string
	for _, r := range st.RegionList() {
		if r.ID != self && !r.Evicted {
			origins = append(origins, r.ID)
		}
	}
	if err := m.takeLeases(ctx, origins); err != nil {
		return res, err
	}
	// 2. Open the export at the peer.
	conns := map[string]*nats.Conn{}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	dial := func(id, url string) (*nats.Conn, error) {
		if nc, ok := conns[id]; ok {
			return nc, nil
		}
		creds := m.d.cfg.NATS
		creds.URL = url
		nc, err := creds.connectOnce("gr-"+m.d.cfg.Instance+"-"+self+"-rebuild-"+id, m.log)
		if err != nil {
			return nil, fmt.Errorf("daemon: NATS of %s at %s: %w", id, url, err)
		}
		conns[id] = nc
		return nc, nil
	}
	pnc, err := dial(req.From, peer.NATS)
	if err != nil {
		return res, fmt.Errorf("the peer %s is unreachable: %w", req.From, err)
	}
	var open child.ExportReply
	if err := ctlRequest(ctx, pnc, child.ControlSubject(m.d.cfg.Instance, req.From)+"."+child.CtlExport, child.ExportRequest{}, &open); err != nil {
		return res, fmt.Errorf("the peer %s: %w", req.From, err)
	}
	pos := crdt.Vector(open.Position)
	log.Info().Str("position", pos.String()).Int64("keys", open.Keys).Msg("export opened at the peer")
	// 3. Every origin's stream must still hold what comes after pos.
	readStreams := func(list []string) (map[string]manager.StreamRange, error) {
		out := map[string]manager.StreamRange{}
		for _, o := range list {
			var js jetstream.JetStream
			if o == self {
				js = m.d.ownJS
			} else {
				nc, err := dial(o, st.Regions[o].NATS)
				if err != nil {
					return nil, err
				}
				if js, err = jetstream.New(nc); err != nil {
					return nil, err
				}
			}
			sr, err := streamRange(ctx, js, m.d.cfg.Instance, o)
			if err != nil {
				return nil, err
			}
			out[o] = sr
		}
		return out, nil
	}
	streams, err := readStreams(append(origins, self))
	if err != nil {
		return res, err
	}
	if err := manager.CheckRebuildPosition(req.From, pos, append(origins, self), streams); err != nil {
		return res, err
	}
	m.setProgress(func(p *manager.RebuildProgress) { p.KeysTotal = open.Keys })
	// 4. Refuse local writes, wipe, copy.
	if err := eng.BeginRebuild(ctx, req.ID); err != nil {
		return res, err
	}
	wiped, err := eng.WipeState(ctx)
	if err != nil {
		return res, fmt.Errorf("daemon: wiping the region's keys: %w", err)
	}
	log.Info().Int("keys", wiped).Msg("region's keys deleted; copying the peer's")
	var clock crdt.Timestamp
	if res.keys, clock, err = m.copyFrom(ctx, pnc, open.Session); err != nil {
		return res, err
	}
	// 5. Position and the region's own ops the peer lacked.
	if _, err := store.UpdateRebuild(ctx, self, req.ID, func(rb *manager.Rebuild) error {
		rb.Phase, rb.Position, rb.Keys = manager.RebuildMerging, open.Position, res.keys
		return nil
	}); err != nil {
		return res, err
	}
	m.setProgress(func(p *manager.RebuildProgress) { p.Phase = manager.RebuildMerging })
	if err := eng.SetApplied(ctx, pos); err != nil {
		return res, err
	}
	// The sequence past what the peer saw of this region, the HLC past
	// every op in the copy.
	if _, err := eng.Restore(ctx, pos[self], clock, nil); err != nil {
		return res, err
	}
	merged, err := m.mergeOwn(ctx, pos[self])
	if err != nil {
		return res, err
	}
	m.setProgress(func(p *manager.RebuildProgress) { p.OpsMerged = int64(merged) })
	if err := eng.EndRebuild(ctx); err != nil {
		return res, err
	}
	if err := m.d.ensureReady(ctx); err != nil {
		return res, err
	}
	// 6. Serve again; the channels replay from pos to the streams' ends.
	// (only the channels that run: a paused or deleted one would never get there)
	ends, err := readStreams(origins)
	if err != nil {
		return res, err
	}
	target := map[string]uint64{}
	var want uint64
	inbound := manager.DesiredInbound(st, self)
	for _, o := range origins {
		if in, ok := inbound[o]; ok && !in.Paused && ends[o].Last > pos[o] {
			target[o] = ends[o].Last
			want += ends[o].Last - pos[o]
		}
	}
	m.setProgress(func(p *manager.RebuildProgress) { p.Phase, p.OpsTarget = manager.RebuildReplaying, want })
	if _, err := store.UpdateRebuild(ctx, self, req.ID, func(rb *manager.Rebuild) error {
		rb.Phase, rb.Target = manager.RebuildReplaying, target
		return nil
	}); err != nil {
		return res, err
	}
	m.rb.hold.Store(false)
	m.reapply(ctx)
	log.Info().Int("own_ops_merged", merged).Uint64("ops_to_replay", want).Msg("region serves again; replaying")
	t := time.NewTicker(replayPoll)
	defer t.Stop()
	for {
		p, err := eng.Position(ctx)
		if err != nil {
			return res, err
		}
		var done uint64
		caught := true
		for o, tgt := range target {
			a := min(p.Applied[o], tgt)
			if a > pos[o] {
				done += a - pos[o]
			}
			if a < tgt {
				caught = false
			}
		}
		res.replayed = done
		m.setProgress(func(p *manager.RebuildProgress) { p.OpsDone = done })
		if caught {
			return res, nil
		}
		for _, s := range m.d.Statuses() {
			if s.State == channel.StateNeedsRebuild {
				return res, fmt.Errorf("the channel %s->%s needs a rebuild again: %s", s.Origin, self, s.LastError)
			}
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-t.C:
		}
	}
}

// takeLeases takes the receiver lease of every origin for this child, so
// that no other child of the region applies while the rebuild copies
// (their receivers stop when they see the rebuild's phase and their leases
// lapse).
func (m *managed) takeLeases(ctx context.Context, origins []string) error {
	deadline := time.Now().Add(channel.DefaultLeaseTTL + 5*time.Second)
	for _, o := range origins {
		for {
			ok, err := m.d.Engine.Lease(ctx, "recv:"+o, m.d.cfg.Owner, channel.DefaultLeaseTTL)
			if err != nil {
				return err
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("daemon: another child of %s still runs the channel from %s", m.d.cfg.Region, o)
			}
			sleep(ctx, 200*time.Millisecond)
		}
	}
	return nil
}

// copyFrom reads the export session's chunks and imports the records; it
// returns the keys copied and the peer's clock after the copy.
func (m *managed) copyFrom(ctx context.Context, nc *nats.Conn, session string) (int64, crdt.Timestamp, error) {
	var buf []byte
	var keys, bytes int64
	for chunk := uint64(0); ; chunk++ {
		data, _ := json.Marshal(child.ExportNext{Chunk: chunk})
		var msg *nats.Msg
		var err error
		for attempt := 0; attempt < 3; attempt++ { // a lost reply: ask again for the same chunk
			rctx, cancel := context.WithTimeout(ctx, exportRequestWait)
			msg, err = nc.RequestWithContext(rctx, session, data)
			cancel()
			if err == nil || ctx.Err() != nil || errors.Is(err, nats.ErrNoResponders) {
				break
			}
		}
		if err != nil {
			return keys, crdt.Timestamp{}, fmt.Errorf("daemon: export chunk %d: %w", chunk, err)
		}
		if e := msg.Header.Get(child.ExportHeaderError); e != "" {
			return keys, crdt.Timestamp{}, fmt.Errorf("daemon: the peer's export failed: %s", e)
		}
		buf = append(buf, msg.Data...)
		bytes += int64(len(msg.Data))
		recs, used, err := child.DecodeRecords(buf)
		if err != nil {
			return keys, crdt.Timestamp{}, err
		}
		buf = append(buf[:0], buf[used:]...)
		for len(recs) > 0 {
			n, size := 0, 0
			for n < len(recs) && (n == 0 || size < importBatchBytes) {
				size += recs[n].Size()
				n++
			}
			if err := m.d.Engine.ImportRecords(ctx, recs[:n]); err != nil {
				return keys, crdt.Timestamp{}, err
			}
			keys += int64(n)
			recs = recs[n:]
		}
		m.setProgress(func(p *manager.RebuildProgress) { p.KeysCopied, p.Bytes = keys, bytes })
		if msg.Header.Get(child.ExportHeaderDone) == "1" {
			if len(buf) > 0 {
				return keys, crdt.Timestamp{}, fmt.Errorf("%w: %d bytes left after the last record", child.ErrCorruptExport, len(buf))
			}
			ts, err := child.ParseClock(msg.Header.Get(child.ExportHeaderClock))
			return keys, ts, err
		}
	}
}

// mergeOwn merges back the region's own ops after seq `after` that the
// copy lacks: its op log first (not shipped yet), then its stream up to
// its end (an op shipped meanwhile left the log for the stream).
func (m *managed) mergeOwn(ctx context.Context, after uint64) (int, error) {
	eng := m.d.Engine
	n := 0
	logLen, err := eng.LogLen(ctx)
	if err != nil {
		return 0, err
	}
	ops, err := eng.ReadLog(ctx, logLen)
	if err != nil {
		return 0, err
	}
	p, err := eng.Position(ctx)
	if err != nil {
		return 0, err
	}
	var logTS crdt.Timestamp // the newest op's: the HLC goes past it
	if len(ops) > 0 {
		op, err := crdt.UnmarshalOp(ops[len(ops)-1])
		if err != nil {
			return 0, fmt.Errorf("daemon: the region's op log: %w", err)
		}
		logTS = op.TS
	}
	for len(ops) > 0 {
		k := min(len(ops), 500)
		if _, err := eng.Restore(ctx, p.Seq, logTS, ops[:k]); err != nil {
			return n, err
		}
		n += k
		ops = ops[k:]
	}
	if m.d.ownJS == nil {
		return n, nil
	}
	st, err := m.d.ownJS.Stream(ctx, channel.StreamName(m.d.cfg.Instance, m.d.cfg.Region))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return n, nil
	}
	if err != nil {
		return n, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return n, err
	}
	last := info.State.LastSeq
	if last <= after {
		return n, nil
	}
	from := after + 1
	if info.State.FirstSeq > from {
		return n, fmt.Errorf("%w: the region's own ops %d to %d are gone from its stream", manager.ErrPeerBehind, from, info.State.FirstSeq-1)
	}
	lastMsg, err := st.GetMsg(ctx, last)
	if err != nil {
		return n, fmt.Errorf("daemon: the newest op of the region's stream: %w", err)
	}
	lastOp, err := crdt.UnmarshalOp(lastMsg.Data)
	if err != nil {
		return n, fmt.Errorf("daemon: the newest op of the region's stream: %w", err)
	}
	merged, err := channel.MergeRange(ctx, st, eng, from, last, lastOp.TS)
	return n + merged, err
}

// streamRange reads what a region's stream holds; a stream that does not
// exist holds nothing.
func streamRange(ctx context.Context, js jetstream.JetStream, instance, region string) (manager.StreamRange, error) {
	s, err := js.Stream(ctx, channel.StreamName(instance, region))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return manager.StreamRange{First: 1}, nil
	}
	if err != nil {
		return manager.StreamRange{}, fmt.Errorf("daemon: the stream of %s: %w", region, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return manager.StreamRange{}, fmt.Errorf("daemon: the stream of %s: %w", region, err)
	}
	return manager.StreamRange{First: info.State.FirstSeq, Last: info.State.LastSeq}, nil
}

// ctlRequest sends a JSON control request and decodes the JSON reply.
func ctlRequest(ctx context.Context, nc *nats.Conn, subject string, req, out any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, exportRequestWait)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return errors.New("no child answers on its NATS (is a child of the region running?)")
	}
	if err != nil {
		return err
	}
	if e := msg.Header.Get("Nats-Service-Error"); e != "" {
		return errors.New(e)
	}
	return json.Unmarshal(msg.Data, out)
}
