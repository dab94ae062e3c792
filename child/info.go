package child

import (
	"context"
	"sort"
	"strconv"
	"strings"
)

var _ infoProvider = (*Engine)(nil)

// InfoExtra adds fields to the ActiveActive section of INFO (the daemon adds
// its channels' states with it). It must be quick.
func (e *Engine) InfoExtra(f func() []InfoField) { e.infoExtra.Store(&f) }

// InfoSections gives INFO the region's keyspace (database 0 only: the user
// keys) and an ActiveActive section: instance, region, the last sequence
// number issued, the op log backlog, the HLC and the applied vector.
func (e *Engine) InfoSections(ctx context.Context) ([]InfoSection, error) {
	ks, err := e.rdb.Info(ctx, "keyspace").Result()
	if err != nil {
		return nil, err
	}
	keyspace := InfoSection{Name: "Keyspace"}
	for _, line := range strings.Split(ks, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "db0" {
			keyspace.Fields = append(keyspace.Fields, InfoField{Key: "db0", Value: v})
		}
	}
	pos, err := e.Position(ctx)
	if err != nil {
		return nil, err
	}
	backlog, err := e.LogLen(ctx)
	if err != nil {
		return nil, err
	}
	hlc, err := e.meta.HMGet(ctx, keyMeta, "ms", "lc").Result()
	if err != nil {
		return nil, err
	}
	aa := InfoSection{Name: "ActiveActive", Fields: []InfoField{
		{Key: "instance", Value: e.cfg.Instance},
		{Key: "region", Value: e.cfg.Region},
		{Key: "seq", Value: strconv.FormatUint(pos.Seq, 10)},
		{Key: "oplog_backlog", Value: strconv.FormatInt(backlog, 10)},
		{Key: "hlc", Value: str(hlc[0]) + "." + str(hlc[1])},
	}}
	regions := make([]string, 0, len(pos.Applied))
	for r := range pos.Applied {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		aa.Fields = append(aa.Fields, InfoField{Key: "applied_" + r, Value: strconv.FormatUint(pos.Applied[r], 10)})
	}
	if f := e.infoExtra.Load(); f != nil {
		aa.Fields = append(aa.Fields, (*f)()...)
	}
	return []InfoSection{keyspace, aa}, nil
}

func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return "0"
}
