package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Lock timing.
const (
	// DefaultLockTTL is how long a lock lives without renewal: the time a
	// crashed manager blocks others. A live holder renews it every third
	// of it.
	DefaultLockTTL = 30 * time.Second
	// lockGrace is how long after its recorded expiry an entry still counts
	// as held, for clocks that disagree a little.
	lockGrace = 2 * time.Second
)

// LockInfo is the value of the lock key: who holds it, for what, until
// when (renewed while the holder runs).
type LockInfo struct {
	Holder   string    `json:"holder"`
	Purpose  string    `json:"purpose,omitempty"`
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
}

// Lock is the manager lock of an instance, held by one manager at a time
// for the duration of an operation that changes the desired state, so
// that two managers acting at once get ErrBusy and change nothing.
//
// It is the key KeyLock in the config bucket, created with kv.Create and a
// per-key TTL (JetStream per-message TTL, nats-server 2.11 or later): if the
// holder dies, the server removes the key when the TTL passes. While held,
// a goroutine renews it every TTL/3 with a revision-checked write, so a
// lock taken over by someone else is noticed (Lost) rather than
// overwritten. The value also records the expiry, and an entry past its
// expiry is taken over with a revision-checked write, should the server
// not have removed it yet.
type Lock struct {
	s     *Store
	ttl   time.Duration
	stop  chan struct{}
	done  chan struct{}
	lost  chan struct{}
	close sync.Once

	mu      sync.Mutex
	info    LockInfo
	rev     uint64
	lostErr error
}

// Lock takes the manager lock for holder (a unique id of the process) and
// purpose (what it is about to do, shown to others who find it busy). ttl
// 0 means DefaultLockTTL; it is rounded up to whole seconds (the server's
// unit, at least 1 s). If another holder has the lock, Lock returns an
// error wrapping ErrBusy that names it. Release the lock when done.
func (s *Store) Lock(ctx context.Context, holder, purpose string, ttl time.Duration) (*Lock, error) {
	if holder == "" {
		return nil, fmt.Errorf("%w: the lock needs a holder id", ErrInvalid)
	}
	if ttl == 0 {
		ttl = DefaultLockTTL
	}
	ttl = max(time.Second, time.Duration(math.Ceil(ttl.Seconds()))*time.Second)
	now := time.Now().UTC()
	info := LockInfo{Holder: holder, Purpose: purpose, Acquired: now, Expires: now.Add(ttl)}
	b, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	var rev uint64
	for attempt := 0; ; attempt++ {
		rev, err = s.config.Create(ctx, KeyLock, b, jetstream.KeyTTL(ttl))
		if err == nil {
			break
		}
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
			return nil, fmt.Errorf("%w: %s (its config bucket is missing)", ErrNoInstance, s.instance)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("manager: taking the lock: %w", err)
		}
		e, gerr := s.config.Get(ctx, KeyLock)
		if errors.Is(gerr, jetstream.ErrKeyNotFound) && attempt < 3 {
			continue // expired between the two calls
		}
		if gerr != nil {
			return nil, fmt.Errorf("manager: reading the lock: %w", gerr)
		}
		var other LockInfo
		if jerr := json.Unmarshal(e.Value(), &other); jerr == nil && time.Now().After(other.Expires.Add(lockGrace)) {
			// Past its expiry and still there: take it over, unless someone
			// else changed it first.
			if rev, err = s.putLock(ctx, b, e.Revision(), ttl); err == nil {
				s.log.Warn().Str("previous_holder", other.Holder).Time("expired", other.Expires).Msg("took over an expired manager lock")
				break
			}
			if !errors.Is(err, ErrBusy) {
				return nil, err
			}
			return nil, busy(other)
		}
		return nil, busy(other)
	}
	l := &Lock{s: s, ttl: ttl, info: info, rev: rev, stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	go l.renew()
	s.log.Debug().Str("holder", holder).Str("purpose", purpose).Msg("manager lock taken")
	return l, nil
}

func busy(other LockInfo) error {
	what := ""
	if other.Purpose != "" {
		what = fmt.Sprintf(" (%s)", other.Purpose)
	}
	return fmt.Errorf("%w: held by %s%s since %s; if that manager died, the lock frees itself by %s",
		ErrBusy, other.Holder, what, other.Acquired.Format(time.RFC3339), other.Expires.Add(lockGrace).Format(time.RFC3339))
}

// putLock writes the lock value with a TTL if the key's revision is still
// rev; a changed key gives ErrBusy.
func (s *Store) putLock(ctx context.Context, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	msg := &nats.Msg{Subject: "$KV." + ConfigBucket(s.instance) + "." + KeyLock, Header: nats.Header{}, Data: value}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: the lock changed meanwhile", ErrBusy)
		}
		return 0, fmt.Errorf("manager: writing the lock: %w", err)
	}
	return ack.Sequence, nil
}

// renew keeps the lock alive until Release, or until it is lost.
func (l *Lock) renew() {
	defer close(l.done)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		info, rev := l.info, l.rev
		l.mu.Unlock()
		now := time.Now().UTC()
		info.Expires = now.Add(l.ttl)
		b, err := json.Marshal(info)
		if err != nil {
			l.fail(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
		n, err := l.s.putLock(ctx, b, rev, l.ttl)
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.info, l.rev = info, n
			l.mu.Unlock()
		case errors.Is(err, ErrBusy):
			l.fail(fmt.Errorf("%w: %w", ErrLockLost, err))
			return
		default:
			l.mu.Lock()
			expired := now.After(l.info.Expires)
			l.mu.Unlock()
			if expired {
				l.fail(fmt.Errorf("%w: could not renew it in time: %w", ErrLockLost, err))
				return
			}
			l.s.log.Warn().Err(err).Msg("renewing the manager lock failed; retrying")
		}
	}
}

func (l *Lock) fail(err error) {
	l.mu.Lock()
	l.lostErr = err
	l.mu.Unlock()
	l.s.log.Error().Err(err).Msg("manager lock lost")
	close(l.lost)
}

// Info returns what the lock records.
func (l *Lock) Info() LockInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info
}

// Lost is closed when the lock was lost (expired before it could be
// renewed, or taken over); Err then says why. A long operation should stop
// at its next step.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Err returns why the lock was lost, or nil.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// Release stops the renewal and deletes the lock if it is still this
// holder's. It returns an error wrapping ErrLockLost if the lock was lost
// meanwhile. Calling it again does nothing.
func (l *Lock) Release(ctx context.Context) error {
	first := false
	l.close.Do(func() { first = true; close(l.stop) })
	if !first {
		return nil
	}
	<-l.done
	if err := l.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	err := l.s.config.Purge(ctx, KeyLock, jetstream.LastRevision(rev))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse):
		return nil // the instance was deleted with its lock
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return fmt.Errorf("%w: it changed hands before the release", ErrLockLost)
	default:
		return fmt.Errorf("manager: releasing the lock: %w", err)
	}
}

// LockHolder returns the current lock, and whether one is held.
func (s *Store) LockHolder(ctx context.Context) (LockInfo, bool, error) {
	var info LockInfo
	_, err := s.get(ctx, KeyLock, &info)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LockInfo{}, false, nil
	}
	if err != nil {
		return LockInfo{}, false, err
	}
	return info, true, nil
}
