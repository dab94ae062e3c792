package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/globalreplica/globalreplica/child"
)

// Convergence verification and the conflict log reach the children of
// every region over the region's own NATS: the children answer control
// requests (internal/daemon, subjects child.ControlSubject) with digests of
// their user-visible state, key digests, short views of keys, their recent
// conflicts and their position.

// ErrNoAnswer is returned when a region's children do not answer a control
// request (none running, its NATS unreachable, or too slow).
var ErrNoAnswer = errors.New("manager: a region did not answer")

// ControlOptions says how to reach the regions' children.
type ControlOptions struct {
	// Dial connects to a region's NATS URL; default nats.Connect without
	// credentials.
	Dial func(url string) (*nats.Conn, error)
	// Timeout bounds each control request (a digest scans a region's whole
	// keyspace). Default DefaultControlTimeout.
	Timeout time.Duration
}

// DefaultControlTimeout is the default bound of one control request.
const DefaultControlTimeout = 2 * time.Minute

func (o *ControlOptions) defaults() {
	if o.Dial == nil {
		o.Dial = func(url string) (*nats.Conn, error) {
			return nats.Connect(url, nats.Name("channel-manager"), nats.Timeout(5*time.Second))
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultControlTimeout
	}
}

// ctlRegion is the control connection to one region's children.
type ctlRegion struct {
	id      string
	nc      *nats.Conn
	subject string
	timeout time.Duration
}

// ctlConnect connects to every region's NATS, in parallel, and returns
// each region's error; the caller closes the connections (ctlClose) also
// on error.
func ctlConnect(instance string, regions []Region, o ControlOptions) ([]*ctlRegion, []error) {
	o.defaults()
	out := make([]*ctlRegion, len(regions))
	errs := make([]error, len(regions))
	var wg sync.WaitGroup
	for i, r := range regions {
		out[i] = &ctlRegion{id: r.ID, subject: child.ControlSubject(instance, r.ID), timeout: o.Timeout}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := o.Dial(r.NATS)
			if err != nil {
				errs[i] = fmt.Errorf("%w: region %s: cannot reach its NATS at %s: %w", ErrNoAnswer, r.ID, r.NATS, err)
				return
			}
			out[i].nc = nc
		}()
	}
	wg.Wait()
	return out, errs
}

func ctlClose(rs []*ctlRegion) {
	for _, r := range rs {
		if r.nc != nil {
			r.nc.Close()
		}
	}
}

// request sends one control request and decodes the JSON reply into out.
func (r *ctlRegion) request(ctx context.Context, endpoint string, req, out any) error {
	data := []byte("{}")
	if req != nil {
		var err error
		if data, err = json.Marshal(req); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	msg, err := r.nc.RequestWithContext(ctx, r.subject+"."+endpoint, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: region %s: no child answers on its NATS (is a child of the region running, with this NATS?)", ErrNoAnswer, r.id)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: region %s: no answer to %s within %s", ErrNoAnswer, r.id, endpoint, r.timeout)
	case err != nil:
		return fmt.Errorf("%w: region %s: %s: %w", ErrNoAnswer, r.id, endpoint, err)
	}
	if e := msg.Header.Get(micro.ErrorHeader); e != "" {
		return fmt.Errorf("manager: region %s: %s: %s", r.id, endpoint, e)
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("manager: region %s: %s: bad reply: %w", r.id, endpoint, err)
	}
	return nil
}

// ctlEach runs f for every connected region in parallel and returns each
// region's error.
func ctlEach(rs []*ctlRegion, f func(i int, r *ctlRegion) error) []error {
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		if r.nc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, r)
		}()
	}
	wg.Wait()
	return errs
}

// VerifyOptions configures Verify.
type VerifyOptions struct {
	ControlOptions
	// MaxKeys bounds the differing keys listed. Default 100.
	MaxKeys int
}

// Limits of the drill-down.
const (
	// verifyKeysPerBucket is the average number of keys per bucket Verify
	// aims at when it picks the number of buckets.
	verifyKeysPerBucket = 32
	// verifyMaxBits caps the buckets at 4096, so that a buckets reply stays
	// well within NATS's default 1 MB payload.
	verifyMaxBits = 12
	// verifyKeysPerRequest bounds the key digests of one keys request.
	verifyKeysPerRequest = 2000
)

// RegionDigest is one region's digest.
type RegionDigest struct {
	Region string       `json:"region"`
	Digest child.Digest `json:"digest"`
}

// KeyDiff is a key whose visible state differs between regions, with each
// region's view of it.
type KeyDiff struct {
	Key   string          `json:"key"`
	Views []RegionKeyView `json:"views"`
}

// RegionKeyView is one region's view of a differing key.
type RegionKeyView struct {
	Region string `json:"region"`
	child.KeyView
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	// Equal is true when every region has the same digest: the same keys
	// with the same visible state.
	Equal   bool           `json:"equal"`
	Regions []RegionDigest `json:"regions"`
	// Bits is the number of bucket bits of the drill-down (0: none needed),
	// DifferingBuckets how many buckets differ.
	Bits             int `json:"bits"`
	DifferingBuckets int `json:"differing_buckets"`
	// Keys lists differing keys, sorted, at most MaxKeys.
	Keys []KeyDiff `json:"differing_keys"`
	// Truncated is true when more keys may differ than Keys lists.
	Truncated bool `json:"truncated"`
}

// Verify compares the user-visible state of the regions: it asks every
// region's children for the digest of the region's state (child.Digest)
// and, when the digests differ, drills down by buckets of keys to the keys
// that differ and shows each region's view of them. It reads only, and
// judges the state of the moment: run it while traffic is quiet (writes
// and ops in flight show as differences). Evicted regions should not be
// passed. A region that does not answer fails the verification with
// ErrNoAnswer: convergence cannot be proven without it.
func Verify(ctx context.Context, instance string, regions []Region, o VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	if len(regions) == 0 {
		return rep, fmt.Errorf("%w: no regions to verify", ErrInvalid)
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = 100
	}
	o.MaxKeys = min(o.MaxKeys, 1000) // one view request
	rs, errs := ctlConnect(instance, regions, o.ControlOptions)
	defer ctlClose(rs)
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	rep.Regions = make([]RegionDigest, len(rs))
	if err := errors.Join(ctlEach(rs, func(i int, r *ctlRegion) error {
		rep.Regions[i].Region = r.id
		return r.request(ctx, child.CtlDigest, nil, &rep.Regions[i].Digest)
	})...); err != nil {
		return rep, err
	}
	rep.Equal = true
	var maxKeys int64
	for _, d := range rep.Regions {
		if d.Digest.Version != rep.Regions[0].Digest.Version {
			return rep, fmt.Errorf("manager: regions %s and %s compute different digest versions (%d, %d): upgrade the children",
				rep.Regions[0].Region, d.Region, rep.Regions[0].Digest.Version, d.Digest.Version)
		}
		if d.Digest != rep.Regions[0].Digest {
			rep.Equal = false
		}
		maxKeys = max(maxKeys, d.Digest.Keys)
	}
	if rep.Equal {
		return rep, nil
	}

	// 1. bucket digests: which buckets differ
	rep.Bits = min(verifyMaxBits, max(1, bits.Len64(uint64(maxKeys/verifyKeysPerBucket))))
	buckets := make([]map[int]child.BucketDigest, len(rs))
	if err := errors.Join(ctlEach(rs, func(i int, r *ctlRegion) error {
		var br child.BucketsReply
		if err := r.request(ctx, child.CtlBuckets, child.BucketsRequest{Bits: rep.Bits}, &br); err != nil {
			return err
		}
		buckets[i] = map[int]child.BucketDigest{}
		for _, b := range br.Buckets {
			buckets[i][b.Bucket] = b
		}
		return nil
	})...); err != nil {
		return rep, err
	}
	type diffBucket struct {
		id   int
		keys int64 // most keys any region has in it
	}
	var diff []diffBucket
	for b := range 1 << rep.Bits {
		same, n := true, int64(0)
		for i := range buckets {
			n = max(n, buckets[i][b].Keys)
			if buckets[i][b] != buckets[0][b] {
				same = false
			}
		}
		if !same {
			diff = append(diff, diffBucket{b, n})
		}
	}
	rep.DifferingBuckets = len(diff)

	// 2. key digests of the differing buckets, a few buckets per request,
	//    until enough differing keys are found
	var differing []string
	for len(diff) > 0 && len(differing) < o.MaxKeys {
		var batch []int
		var n int64
		for len(diff) > 0 && (len(batch) == 0 || n+diff[0].keys <= verifyKeysPerRequest) {
			batch = append(batch, diff[0].id)
			n += diff[0].keys
			diff = diff[1:]
		}
		sums := make([]map[string]string, len(rs))
		truncated := make([]bool, len(rs))
		if err := errors.Join(ctlEach(rs, func(i int, r *ctlRegion) error {
			var kr child.KeysReply
			if err := r.request(ctx, child.CtlKeys, child.KeysRequest{Bits: rep.Bits, Buckets: batch, Limit: verifyKeysPerRequest}, &kr); err != nil {
				return err
			}
			truncated[i] = kr.Truncated
			sums[i] = make(map[string]string, len(kr.Keys))
			for _, k := range kr.Keys {
				sums[i][k.Key] = k.Sum
			}
			return nil
		})...); err != nil {
			return rep, err
		}
		union := map[string]bool{}
		for _, m := range sums {
			for k := range m {
				union[k] = true
			}
		}
		// a region whose listing was cut (one bucket held more keys than a
		// request returns) may have the keys it did not list: only keys it
		// listed are compared with it
		var found []string
		for k := range union {
			var vals []string // each compared region's sum, "" when absent
			for i := range sums {
				sum, ok := sums[i][k]
				if !ok && truncated[i] {
					continue
				}
				vals = append(vals, sum)
			}
			differs := false
			for _, v := range vals {
				differs = differs || v != vals[0]
			}
			if differs {
				found = append(found, k)
			}
		}
		for _, t := range truncated {
			rep.Truncated = rep.Truncated || t
		}
		sort.Strings(found)
		differing = append(differing, found...)
	}
	if len(diff) > 0 {
		rep.Truncated = true
	}
	sort.Strings(differing)
	if len(differing) > o.MaxKeys {
		differing, rep.Truncated = differing[:o.MaxKeys], true
	}
	if len(differing) == 0 {
		return rep, nil
	}

	// 3. each region's view of the differing keys
	views := make([][]child.KeyView, len(rs))
	if err := errors.Join(ctlEach(rs, func(i int, r *ctlRegion) error {
		return r.request(ctx, child.CtlView, child.ViewRequest{Keys: differing}, &views[i])
	})...); err != nil {
		return rep, err
	}
	for j, k := range differing {
		kd := KeyDiff{Key: k}
		for i, r := range rs {
			if j >= len(views[i]) {
				return rep, fmt.Errorf("manager: region %s: short view reply", r.id)
			}
			kd.Views = append(kd.Views, RegionKeyView{Region: r.id, KeyView: views[i][j]})
		}
		rep.Keys = append(rep.Keys, kd)
	}
	return rep, nil
}

// Differs summarizes a report in one line.
func (rep VerifyReport) Differs() string {
	if rep.Equal {
		return ""
	}
	var parts []string
	for _, d := range rep.Regions {
		parts = append(parts, fmt.Sprintf("%s: %d keys %s", d.Region, d.Digest.Keys, ctlShortSum(d.Digest.Sum)))
	}
	return strings.Join(parts, ", ")
}

func ctlShortSum(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
