package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newVerifyCommand) }

// verifyView is the JSON of verify.
type verifyView struct {
	Equal            bool                `json:"equal"`
	Regions          []verifyRegionView  `json:"regions"`
	Bits             int                 `json:"bits"`              // bucket bits of the drill-down; 0 when equal
	DifferingBuckets int                 `json:"differing_buckets"` // of 2^bits
	DifferingKeys    []verifyKeyDiffView `json:"differing_keys"`
	Truncated        bool                `json:"truncated"` // more keys may differ than listed
	Skipped          []verifySkippedView `json:"skipped"`   // evicted regions, not compared
}

type verifyRegionView struct {
	Region string `json:"region"`
	Keys   int64  `json:"keys"`
	Digest string `json:"digest"` // hex; equal digests mean equal visible state
}

type verifySkippedView struct {
	Region string `json:"region"`
	Reason string `json:"reason"`
}

type verifyKeyDiffView struct {
	Key   string          `json:"key"`
	Views []verifyKeyView `json:"views"` // one per region, in the order of regions
}

type verifyKeyView struct {
	Region   string     `json:"region"`
	Exists   bool       `json:"exists"`
	Type     string     `json:"type"`     // "" when the key does not exist
	Len      int        `json:"len"`      // bytes of a string, fields or members of a collection
	Value    string     `json:"value"`    // the value, cut short
	Deadline *time.Time `json:"deadline"` // null without a TTL
	Digest   string     `json:"digest"`   // the key's digest
}

func newVerifyView(rep manager.VerifyReport, skipped []verifySkippedView) verifyView {
	v := verifyView{
		Equal: rep.Equal, Bits: rep.Bits, DifferingBuckets: rep.DifferingBuckets, Truncated: rep.Truncated,
		Regions: []verifyRegionView{}, DifferingKeys: []verifyKeyDiffView{}, Skipped: skipped,
	}
	for _, d := range rep.Regions {
		v.Regions = append(v.Regions, verifyRegionView{Region: d.Region, Keys: d.Digest.Keys, Digest: d.Digest.Sum})
	}
	for _, k := range rep.Keys {
		kd := verifyKeyDiffView{Key: k.Key, Views: []verifyKeyView{}}
		for _, kv := range k.Views {
			x := verifyKeyView{Region: kv.Region, Exists: kv.Exists, Type: kv.Type, Len: kv.Len, Value: kv.Value, Digest: kv.Sum}
			if kv.DeadlineMs > 0 {
				t := time.UnixMilli(kv.DeadlineMs).UTC()
				x.Deadline = &t
			}
			kd.Views = append(kd.Views, x)
		}
		v.DifferingKeys = append(v.DifferingKeys, kd)
	}
	return v
}

// regionDial connects to a region's NATS with the global credentials
// (regions and the config store share them).
func (a *app) regionDial(url string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("channel-manager"), nats.Timeout(connectTimeout)}
	switch {
	case a.g.creds != "":
		opts = append(opts, nats.UserCredentials(a.g.creds))
	case a.g.token != "":
		opts = append(opts, nats.Token(a.g.token))
	case a.g.user != "":
		opts = append(opts, nats.UserInfo(a.g.user, a.g.password))
	}
	return nats.Connect(url, opts...)
}

// activeRegions returns the regions that are not evicted (and the evicted
// ones as skipped), all of them when only is empty, else the named ones.
func activeRegions(ctx context.Context, s *manager.Store, only []string) ([]manager.Region, []verifySkippedView, error) {
	all, err := s.Regions(ctx)
	if err != nil {
		return nil, nil, err
	}
	byID := map[string]manager.Region{}
	for _, r := range all {
		byID[r.ID] = r
	}
	if len(only) > 0 {
		var sel []manager.Region
		for _, id := range only {
			r, ok := byID[id]
			if !ok {
				return nil, nil, fmt.Errorf("%w: %s", manager.ErrNoRegion, id)
			}
			sel = append(sel, r)
		}
		all = sel
	}
	var active []manager.Region
	skipped := []verifySkippedView{}
	for _, r := range all {
		if r.Evicted {
			skipped = append(skipped, verifySkippedView{Region: r.ID, Reason: "evicted (comes back only through rebuild)"})
			continue
		}
		active = append(active, r)
	}
	return active, skipped, nil
}

func newVerifyCommand(a *app) *cobra.Command {
	var (
		maxKeys int
		timeout time.Duration
		only    []string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Compare the user-visible state of every region (exit code 5 when they differ)",
		Long: `Compare the user-visible state of every region that is not evicted: the
children of each region compute a digest of their region's database 0 (every
key's name, type, visible value(s) and deadline), reached over the region's
own NATS. Deadlines are compared exactly: converged regions hold the same
absolute deadline for a key. Equal digests prove equal state. When they differ, verify narrows
the difference down by buckets of keys and lists the differing keys (at most
--max-keys) with each region's view of them.

The comparison reads the state of the moment: run it while traffic is quiet
(writes in flight or channels that have not drained show as differences).

Exit code 0 when the regions are equal, 5 when they differ, 1 when a region
did not answer (no child running, NATS unreachable), 3 for an unknown region.`,
		Example: "  channel-manager verify\n  channel-manager verify --json --max-keys 20\n  channel-manager verify --region fra --region sgp",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if maxKeys < 1 || maxKeys > 1000 {
				return usageErr("--max-keys %d: 1 to 1000", maxKeys)
			}
			if timeout <= 0 {
				return usageErr("--timeout %s: must be positive", timeout)
			}
			ctx := cmd.Context()
			s, err := a.store(ctx)
			if err != nil {
				return err
			}
			regions, skipped, err := activeRegions(ctx, s, only)
			if err != nil {
				return err
			}
			if len(regions) == 0 {
				return fmt.Errorf("%w: no regions to verify (`channel-manager region list`)", manager.ErrNoRegion)
			}
			rep, err := manager.Verify(ctx, s.Instance(), regions, manager.VerifyOptions{
				ControlOptions: manager.ControlOptions{Dial: a.regionDial, Timeout: timeout},
				MaxKeys:        maxKeys,
			})
			if err != nil {
				return err
			}
			v := newVerifyView(rep, skipped)
			if err := a.print(v, func(w io.Writer) error { return verifyTable(w, v) }); err != nil {
				return err
			}
			if !rep.Equal {
				return errDiffers
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&maxKeys, "max-keys", 100, "list at most this many differing keys (1-1000)")
	cmd.Flags().DurationVar(&timeout, "timeout", manager.DefaultControlTimeout, "how long to wait for each region's answer (a digest scans the whole keyspace)")
	cmd.Flags().StringSliceVar(&only, "region", nil, "compare only these regions (repeat or comma-separate); default all that are not evicted")
	return cmd
}

func verifyTable(w io.Writer, v verifyView) error {
	rows := make([][]string, len(v.Regions))
	for i, r := range v.Regions {
		rows[i] = []string{r.Region, strconv.FormatInt(r.Keys, 10), r.Digest}
	}
	if err := table(w, []string{"REGION", "KEYS", "DIGEST"}, rows); err != nil {
		return err
	}
	for _, s := range v.Skipped {
		if _, err := fmt.Fprintf(w, "skipped %s: %s\n", s.Region, s.Reason); err != nil {
			return err
		}
	}
	if v.Equal {
		_, err := fmt.Fprintf(w, "\nequal: %d region(s) show the same user-visible state\n", len(v.Regions))
		return err
	}
	more := ""
	if v.Truncated {
		more = " (more may differ)"
	}
	if _, err := fmt.Fprintf(w, "\nDIFFERENT: %d differing key(s) listed%s, in %d of %d buckets\n\n",
		len(v.DifferingKeys), more, v.DifferingBuckets, 1<<v.Bits); err != nil {
		return err
	}
	var krows [][]string
	for _, k := range v.DifferingKeys {
		for i, kv := range k.Views {
			key := ""
			if i == 0 {
				key = k.Key
			}
			typ, ln, dl, val := "(none)", "-", "-", ""
			if kv.Exists {
				typ, ln, val = kv.Type, strconv.Itoa(kv.Len), kv.Value
				if kv.Deadline != nil {
					dl = kv.Deadline.Format(time.RFC3339)
				}
			}
			krows = append(krows, []string{key, kv.Region, typ, ln, dl, strings.ReplaceAll(val, "\t", " ")})
		}
	}
	return table(w, []string{"KEY", "REGION", "TYPE", "LEN", "DEADLINE", "VALUE"}, krows)
}
