// Command failover is an application that writes through the regional
// client: it sends its writes to the preferred region that meets its
// conditions, moves when that region fails or lags, comes back after the
// hold time, and logs every move.
//
// Start a playground (`go tool task demo`) and give it the regions it
// prints, own region first: name, RESP address and HTTP endpoint.
//
//	go run ./examples/failover \
//	  --region sgp,127.0.0.1:7000,127.0.0.1:41234 \
//	  --region fra,127.0.0.1:7001,127.0.0.1:41235 \
//	  --max-lag 500ms --hold 10s
//
// Then pause sgp's inbound channel from fra and watch the client leave sgp
// while fra writes, and come back 10s after the channel resumes:
//
//	curl -X POST http://127.0.0.1:41234/channels/fra/pause
//	redis-cli -p 7001 SET from-fra 1
//	curl -X POST http://127.0.0.1:41234/channels/fra/resume
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/regional"
)

type regionFlags []regional.Region

func (f *regionFlags) String() string { return fmt.Sprint(*f) }

func (f *regionFlags) Set(s string) error {
	parts := strings.Split(s, ",")
	if len(parts) < 2 || len(parts) > 3 {
		return errors.New("want name,redis-addr[,http-endpoint], e.g. sgp,127.0.0.1:7000,127.0.0.1:41234")
	}
	r := regional.Region{Name: parts[0], Addr: parts[1]}
	if len(parts) == 3 {
		r.HTTP = parts[2]
	}
	*f = append(*f, r)
	return nil
}

func main() { os.Exit(mainCode()) }

func mainCode() int {
	var (
		cfg      regional.Config
		regions  regionFlags
		every    time.Duration
		duration time.Duration
	)
	flag.Var(&regions, "region", "a region as name,redis-addr,http-endpoint; repeat, own region first")
	flag.DurationVar(&cfg.MaxLag, "max-lag", 0, "avoid regions whose inbound channels lag more than this (0: not checked)")
	flag.Int64Var(&cfg.MaxLagOps, "max-lag-ops", 0, "avoid regions with more unapplied ops than this on a channel (0: not checked)")
	flag.IntVar(&cfg.FailureThreshold, "failures", regional.DefaultFailureThreshold, "consecutive failures before a region counts as down")
	flag.DurationVar(&cfg.ProbeInterval, "probe", 500*time.Millisecond, "probe interval")
	flag.DurationVar(&cfg.HoldTime, "hold", 10*time.Second, "fail back after the preferred region has been healthy this long")
	flag.DurationVar(&every, "every", 200*time.Millisecond, "write interval")
	flag.DurationVar(&duration, "duration", 0, "stop after this long (0: at Ctrl-C)")
	flag.Parse()
	cfg.Regions = regions
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).With().Timestamp().Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	if err := run(ctx, cfg, every, log); err != nil {
		log.Error().Err(err).Msg("failover example")
		return 1
	}
	return 0
}

func run(ctx context.Context, cfg regional.Config, every time.Duration, log zerolog.Logger) error {
	cfg.Options = &redis.Options{DialTimeout: time.Second, DialerRetries: 1, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1}
	cfg.OnEvent = func(e regional.Event) {
		log.Warn().Str("event", string(e.Kind)).Str("region", e.Region).Str("from", e.From).Str("to", e.To).Msg(e.Reason)
	}
	c, err := regional.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	log.Info().Str("active", c.Active()).Msg("writing; Ctrl-C stops")
	tick := time.NewTicker(every)
	defer tick.Stop()
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	var ok, failed int
	for {
		select {
		case <-ctx.Done():
			log.Info().Int("ok", ok).Int("failed", failed).Msg("stopped")
			return nil
		case <-report.C:
			log.Info().Str("active", c.Active()).Int("ok", ok).Int("failed", failed).Msg("writes")
		case <-tick.C:
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := c.Incr(wctx, "example:writes").Err()
			cancel()
			if err != nil {
				failed++
				log.Error().Err(err).Str("active", c.Active()).Msg("write failed")
				continue
			}
			ok++
		}
	}
}
