package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/child"
)

// Control requests over NATS: the channel-manager CLI knows only the NATS
// URLs of the regions (from the config store), so children answer its
// requests on their region's own NATS, as a NATS micro service
// ("gr-child", discoverable with `nats micro ls`) with JSON endpoints under
// child.ControlSubject(instance, region):
//
//	digest     {}                                  -> child.Digest
//	buckets    child.BucketsRequest                -> child.BucketsReply
//	keys       child.KeysRequest                   -> child.KeysReply
//	view       child.ViewRequest                   -> []child.KeyView
//	conflicts  child.ConflictsRequest              -> child.ConflictsReply
//	position   {}                                  -> child.PositionReply
//	export     child.ExportRequest                 -> child.ExportReply (rebuild.go)
//
// The children of one region form one queue group, so one of them answers.
// Errors come back as micro service errors (Nats-Service-Error headers).

const (
	// controlTimeout bounds one control request's work (a digest scans the
	// whole keyspace).
	controlTimeout = 10 * time.Minute
	// controlParallel bounds the requests a child works on at once.
	controlParallel = 4
	// controlService is the micro service name of every child.
	controlService = "gr-child"
)

// startControl registers the control service on the region's own NATS
// connection. It lives as long as the connection.
func (d *Daemon) startControl(nc *nats.Conn, log zerolog.Logger) error {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        controlService,
		Version:     "1.0.0",
		Description: "Global Replica child: digests, conflicts and position of region " + d.cfg.Region,
		Metadata:    map[string]string{"instance": d.cfg.Instance, "region": d.cfg.Region},
	})
	if err != nil {
		return fmt.Errorf("daemon: control service: %w", err)
	}
	g := svc.AddGroup(child.ControlSubject(d.cfg.Instance, d.cfg.Region))
	sem := make(chan struct{}, controlParallel)
	e := d.Engine
	add := func(name string, h func(ctx context.Context, data []byte) (any, error)) error {
		return g.AddEndpoint(name, micro.HandlerFunc(func(req micro.Request) {
			// a digest takes long: never hold the subscription
			go func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
				defer cancel()
				v, err := h(ctx, req.Data())
				if err == nil {
					var b []byte
					if b, err = json.Marshal(v); err == nil {
						if lim := nc.MaxPayload(); lim > 0 && int64(len(b)) > lim-1024 {
							err = fmt.Errorf("reply of %d bytes exceeds the NATS payload limit; ask for less", len(b))
						} else {
							err = nc.PublishMsg(&nats.Msg{Subject: req.Reply(), Data: b})
							if err != nil {
								log.Warn().Err(err).Str("endpoint", name).Msg("control reply not sent")
							}
							return
						}
					}
				}
				code := "500"
				if errors.Is(err, errBadRequest) {
					code = "400"
				}
				// Not req.Error nor req.Respond: they record the outcome in
				// the request, which the service reads for its stats when the
				// handler returns, while this goroutine may still run.
				reply := &nats.Msg{Subject: req.Reply(), Header: nats.Header{
					micro.ErrorHeader: []string{err.Error()}, micro.ErrorCodeHeader: []string{code},
				}}
				if rerr := nc.PublishMsg(reply); rerr != nil {
					log.Warn().Err(rerr).Str("endpoint", name).Msg("control error reply not sent")
				}
			}()
		}))
	}
	endpoints := []struct {
		name string
		h    func(ctx context.Context, data []byte) (any, error)
	}{
		{child.CtlDigest, func(ctx context.Context, _ []byte) (any, error) { return e.Digest(ctx) }},
		{child.CtlBuckets, func(ctx context.Context, data []byte) (any, error) {
			var r child.BucketsRequest
			if err := decodeRequest(data, &r); err != nil {
				return nil, err
			}
			if r.Bits < 0 || r.Bits > child.MaxBucketBits {
				return nil, fmt.Errorf("%w: bits %d out of 0..%d", errBadRequest, r.Bits, child.MaxBucketBits)
			}
			dg, bs, err := e.Buckets(ctx, r.Bits)
			return child.BucketsReply{Digest: dg, Bits: r.Bits, Buckets: bs}, err
		}},
		{child.CtlKeys, func(ctx context.Context, data []byte) (any, error) {
			var r child.KeysRequest
			if err := decodeRequest(data, &r); err != nil {
				return nil, err
			}
			if r.Bits < 0 || r.Bits > child.MaxBucketBits {
				return nil, fmt.Errorf("%w: bits %d out of 0..%d", errBadRequest, r.Bits, child.MaxBucketBits)
			}
			keys, truncated, err := e.KeyDigests(ctx, r.Bits, r.Buckets, r.Limit)
			return child.KeysReply{Keys: keys, Truncated: truncated}, err
		}},
		{child.CtlView, func(ctx context.Context, data []byte) (any, error) {
			var r child.ViewRequest
			if err := decodeRequest(data, &r); err != nil {
				return nil, err
			}
			if len(r.Keys) > 1000 {
				return nil, fmt.Errorf("%w: at most 1000 keys per view request", errBadRequest)
			}
			return e.View(ctx, r.Keys)
		}},
		{child.CtlConflicts, func(ctx context.Context, data []byte) (any, error) {
			var r child.ConflictsRequest
			if err := decodeRequest(data, &r); err != nil {
				return nil, err
			}
			cs, err := e.Conflicts(ctx, r.N)
			if err != nil {
				return nil, err
			}
			counts, err := e.ConflictCounts(ctx)
			return child.ConflictsReply{Conflicts: cs, Counts: counts}, err
		}},
		{child.CtlExport, func(ctx context.Context, data []byte) (any, error) {
			var r child.ExportRequest
			if err := decodeRequest(data, &r); err != nil {
				return nil, err
			}
			return d.openExport(ctx, nc, r, log)
		}},
		{child.CtlPosition, func(ctx context.Context, _ []byte) (any, error) {
			p, err := e.Position(ctx)
			return child.PositionReply{Region: d.cfg.Region, Seq: p.Seq, Applied: p.Applied}, err
		}},
	}
	for _, ep := range endpoints {
		if err := add(ep.name, ep.h); err != nil {
			_ = svc.Stop()
			return fmt.Errorf("daemon: control endpoint %s: %w", ep.name, err)
		}
	}
	return nil
}

var errBadRequest = errors.New("bad request")

// decodeRequest reads a JSON request; an empty payload is the zero request.
func decodeRequest(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	return nil
}
