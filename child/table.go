package child

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/tidwall/match"
)

// Command is one entry of the command table, the single source of the RESP
// endpoint's behaviour: dispatch, COMMAND (COUNT, INFO, DOCS, LIST,
// GETKEYS), the help text of `child --commands` and the refusal errors all
// derive from it.
//
// Fields follow Redis's conventions so that COMMAND replies look like Redis 7's:
//
//   - Name is the lower-case command name ("get"). For an entry of
//     Subcommands it is the subcommand's name alone ("setname"); the full name
//     "client|setname" is derived.
//   - Arity counts the command name: N > 0 means exactly N arguments, -N
//     means at least N. A subcommand's arity counts the command and the
//     subcommand (CLIENT SETNAME name has arity 3).
//   - Flags are Redis's COMMAND flags (FlagWrite, FlagReadonly, FlagFast, ...).
//   - FirstKey, LastKey, Step give the key positions (0, 0, 0 for none;
//     LastKey -1 means the last argument).
//   - Group is Redis's command group (GroupString, GroupHash, ...).
//   - Summary is one line for help and COMMAND DOCS.
//   - Handler runs the command; see Call. It must write exactly one reply.
//   - Refused, when set, lists the command but refuses it with
//     "ERR <NAME> is not supported in active-active mode: <Refused>".
//     Refused commands need only Name, Group and Refused.
//   - Defers allows the handler to defer its reply (Call.Later).
//   - Subcommands makes this a container command (CLIENT, COMMAND): the
//     second argument selects the subcommand, which has its own Arity, Flags
//     and Handler. Handler of the container runs when only the command name
//     is given and Arity allows it (COMMAND alone).
type Command struct {
	Name        string
	Arity       int
	Flags       []string
	FirstKey    int
	LastKey     int
	Step        int
	Group       string
	Summary     string
	Handler     func(*Call)
	Refused     string
	Subcommands []Command
	// Defers lets the handler defer its reply with Call.Later, so that
	// pipelined commands overlap their backend round trips.
	Defers bool

	fullName string              // "get", "client|setname"
	upper    string              // "GET", "CLIENT"
	subs     map[string]*Command // lower-case subcommand name -> entry
	noAuth   bool                // FlagNoAuth: allowed before AUTH
	// needsEngine is set for data commands: those of the data groups
	// (generic, string, hash, set, sorted-set, ...) and any command flagged
	// write or readonly. With a nil engine they answer ErrNoEngine.
	needsEngine bool
}

// Command flags, as Redis 7 reports them in COMMAND.
const (
	FlagWrite           = "write"
	FlagReadonly        = "readonly"
	FlagDenyOOM         = "denyoom"
	FlagAdmin           = "admin"
	FlagPubSub          = "pubsub"
	FlagNoScript        = "noscript"
	FlagBlocking        = "blocking"
	FlagLoading         = "loading"
	FlagStale           = "stale"
	FlagSkipMonitor     = "skip_monitor"
	FlagSkipSlowlog     = "skip_slowlog"
	FlagFast            = "fast"
	FlagNoAuth          = "no_auth"
	FlagMayReplicate    = "may_replicate"
	FlagNoMandatoryKeys = "no_mandatory_keys"
	FlagNoMulti         = "no_multi"
	FlagMovableKeys     = "movablekeys"
	FlagAllowBusy       = "allow_busy"
)

// Command groups, as Redis 7 names them in COMMAND DOCS.
const (
	GroupGeneric      = "generic"
	GroupString       = "string"
	GroupHash         = "hash"
	GroupSet          = "set"
	GroupSortedSet    = "sorted-set"
	GroupList         = "list"
	GroupStream       = "stream"
	GroupBitmap       = "bitmap"
	GroupHyperLogLog  = "hyperloglog"
	GroupGeo          = "geo"
	GroupPubSub       = "pubsub"
	GroupTransactions = "transactions"
	GroupScripting    = "scripting"
	GroupConnection   = "connection"
	GroupServer       = "server"
	GroupCluster      = "cluster"
)

var knownFlags = map[string]bool{
	FlagWrite: true, FlagReadonly: true, FlagDenyOOM: true, FlagAdmin: true,
	FlagPubSub: true, FlagNoScript: true, FlagBlocking: true, FlagLoading: true,
	FlagStale: true, FlagSkipMonitor: true, FlagSkipSlowlog: true, FlagFast: true,
	FlagNoAuth: true, FlagMayReplicate: true, FlagNoMandatoryKeys: true,
	FlagNoMulti: true, FlagMovableKeys: true, FlagAllowBusy: true,
}

// knownGroups maps each group to its ACL category (empty: none) and whether
// its commands need the engine.
var knownGroups = map[string]struct {
	category string
	data     bool
}{
	GroupGeneric:      {"@keyspace", true},
	GroupString:       {"@string", true},
	GroupHash:         {"@hash", true},
	GroupSet:          {"@set", true},
	GroupSortedSet:    {"@sortedset", true},
	GroupList:         {"@list", true},
	GroupStream:       {"@stream", true},
	GroupBitmap:       {"@bitmap", true},
	GroupHyperLogLog:  {"@hyperloglog", true},
	GroupGeo:          {"@geo", true},
	GroupPubSub:       {"@pubsub", false},
	GroupTransactions: {"@transaction", false},
	GroupScripting:    {"@scripting", false},
	GroupConnection:   {"@connection", false},
	GroupServer:       {"", false},
	GroupCluster:      {"", false},
}

// commandTable holds every registered command by lower-case name. It is
// filled by register from init functions and read-only afterwards.
var commandTable = map[string]*Command{}

// register adds commands to the table. Each cmd_*.go file calls it from an
// init function:
//
//	func init() {
//		register(
//			Command{Name: "get", Arity: 2, Flags: []string{FlagReadonly, FlagFast},
//				FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString,
//				Summary: "Get the value of a key", Handler: cmdGet},
//		)
//	}
//
// An invalid entry (empty or upper-case name, duplicate, zero arity, unknown
// flag or group, no handler and no refusal) is a programming error and
// panics at init, so that `go test` catches it.
func register(cmds ...Command) {
	for i := range cmds {
		c := cmds[i]
		if err := prepareCommand(&c, ""); err != nil {
			panic(err)
		}
		if _, dup := commandTable[c.Name]; dup {
			panic(fmt.Sprintf("child: command %q registered twice", c.Name))
		}
		commandTable[c.Name] = &c
	}
	commandCache.reset()
}

// prepareCommand validates an entry and fills its derived fields. parent is
// the container's name for a subcommand.
func prepareCommand(c *Command, parent string) error {
	if c.Name == "" || c.Name != strings.ToLower(c.Name) || strings.ContainsAny(c.Name, " |\r\n\t") || len(c.Name) > maxCommandName {
		return fmt.Errorf("child: invalid command name %q", c.Name)
	}
	c.fullName = c.Name
	if parent != "" {
		c.fullName = parent + "|" + c.Name
	}
	c.upper = strings.ToUpper(c.Name)
	g, ok := knownGroups[c.Group]
	if !ok {
		return fmt.Errorf("child: command %q: unknown group %q", c.fullName, c.Group)
	}
	c.needsEngine = g.data
	if c.Refused != "" {
		if c.Handler != nil || len(c.Subcommands) > 0 {
			return fmt.Errorf("child: command %q: a refused command has no handler", c.fullName)
		}
		return nil
	}
	if c.Handler == nil && len(c.Subcommands) == 0 {
		return fmt.Errorf("child: command %q: no handler", c.fullName)
	}
	if c.Arity == 0 {
		return fmt.Errorf("child: command %q: arity 0", c.fullName)
	}
	for _, f := range c.Flags {
		if !knownFlags[f] {
			return fmt.Errorf("child: command %q: unknown flag %q", c.fullName, f)
		}
		switch f {
		case FlagNoAuth:
			c.noAuth = true
		case FlagWrite, FlagReadonly:
			c.needsEngine = true
		}
	}
	if c.FirstKey < 0 || c.Step < 0 || (c.FirstKey > 0) != (c.Step > 0) {
		return fmt.Errorf("child: command %q: bad key positions %d %d %d", c.fullName, c.FirstKey, c.LastKey, c.Step)
	}
	if len(c.Subcommands) > 0 {
		if parent != "" {
			return fmt.Errorf("child: command %q: nested subcommands", c.fullName)
		}
		subs := make([]Command, len(c.Subcommands))
		copy(subs, c.Subcommands)
		c.Subcommands = subs
		c.subs = make(map[string]*Command, len(subs))
		for i := range subs {
			s := &subs[i]
			if s.Refused != "" {
				return fmt.Errorf("child: subcommand %s|%s: subcommands cannot be refused", c.Name, s.Name)
			}
			if s.Group == "" {
				s.Group = c.Group
			}
			if err := prepareCommand(s, c.Name); err != nil {
				return err
			}
			if s.Handler == nil {
				return fmt.Errorf("child: subcommand %q: no handler", s.fullName)
			}
			if s.Arity > 0 && s.Arity < 2 || s.Arity < 0 && s.Arity > -2 {
				return fmt.Errorf("child: subcommand %q: arity %d does not count the subcommand", s.fullName, s.Arity)
			}
			if _, dup := c.subs[s.Name]; dup {
				return fmt.Errorf("child: subcommand %q registered twice", s.fullName)
			}
			c.subs[s.Name] = s
		}
	}
	return nil
}

// maxCommandName bounds command names, so that lookup lowers names into a
// fixed buffer without allocating.
const maxCommandName = 32

// lookupCommand finds a command by name, case-insensitively.
func lookupCommand(name []byte) *Command {
	return lookupIn(commandTable, name)
}

func lookupIn(table map[string]*Command, name []byte) *Command {
	if len(name) == 0 || len(name) > maxCommandName {
		return nil
	}
	var buf [maxCommandName]byte
	for i, b := range name {
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		buf[i] = b
	}
	return table[string(buf[:len(name)])] // no allocation: map index with a converted key
}

// arityOK reports whether n arguments (counting the name) fit arity.
func arityOK(arity, n int) bool {
	if arity > 0 {
		return n == arity
	}
	return n >= -arity
}

// Commands returns a copy of the command table sorted by name, supported
// and refused commands alike (see Command.Refused).
func Commands() []Command {
	out := make([]Command, 0, len(commandTable))
	for _, c := range commandTable {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// supportedCommands returns the commands that run, sorted by name.
func supportedCommands() []*Command {
	out := make([]*Command, 0, len(commandTable))
	for _, c := range commandTable {
		if c.Refused == "" {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// refusalError is the error a refused command answers.
func refusalError(c *Command) string {
	return "ERR " + c.upper + " is not supported in active-active mode: " + c.Refused
}

// WriteCommandHelp writes the help text of the command table: the supported
// commands by group with arity and summary, then the refused commands with
// the reason their error gives.
func WriteCommandHelp(w io.Writer) error {
	groups := map[string][]Command{}
	var refused []Command
	for _, c := range Commands() {
		if c.Refused != "" {
			refused = append(refused, c)
			continue
		}
		groups[c.Group] = append(groups[c.Group], c)
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)

	var buf bytes.Buffer // tabwriter output; the one write to w is checked
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintf(tw, "Supported commands (Redis %s reply formats and errors):\n", RedisVersion)
	for _, g := range names {
		_, _ = fmt.Fprintf(tw, "\n  %s\n", g)
		for _, c := range groups[g] {
			_, _ = fmt.Fprintf(tw, "    %s\t%s\t%s\n", usageOf(&c), flagSummary(&c), c.Summary)
			for i := range c.Subcommands {
				s := &c.Subcommands[i]
				_, _ = fmt.Fprintf(tw, "    %s\t%s\t%s\n", usageOf(s), flagSummary(s), s.Summary)
			}
		}
	}
	_, _ = fmt.Fprintf(tw, "\nRefused commands: each answers\n  ERR <COMMAND> is not supported in active-active mode: <reason>\n\n")
	for _, c := range refused {
		_, _ = fmt.Fprintf(tw, "    %s\t%s\t%s\n", c.upper, c.Group, c.Refused)
	}
	_, _ = fmt.Fprintf(tw, "\nAny other command answers ERR unknown command '<name>', with args beginning with: ...\n")
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// usageOf renders a name with its arity: "GET (2)", "MSET (>=3)".
func usageOf(c *Command) string {
	name := strings.ToUpper(strings.ReplaceAll(c.fullName, "|", " "))
	if c.Arity > 0 {
		return fmt.Sprintf("%s (%d)", name, c.Arity)
	}
	return fmt.Sprintf("%s (>=%d)", name, -c.Arity)
}

func flagSummary(c *Command) string {
	switch {
	case hasFlag(c, FlagWrite):
		return "write"
	case hasFlag(c, FlagReadonly):
		return "read"
	default:
		return ""
	}
}

func hasFlag(c *Command, flag string) bool {
	for _, f := range c.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// aclCategories derives Redis ACL categories from flags and group.
func aclCategories(c *Command) []string {
	var cats []string
	if hasFlag(c, FlagWrite) {
		cats = append(cats, "@write")
	}
	if hasFlag(c, FlagReadonly) {
		cats = append(cats, "@read")
	}
	if g := knownGroups[c.Group].category; g != "" {
		cats = append(cats, g)
	}
	if hasFlag(c, FlagFast) {
		cats = append(cats, "@fast")
	} else {
		cats = append(cats, "@slow")
	}
	if hasFlag(c, FlagAdmin) {
		cats = append(cats, "@admin", "@dangerous")
	}
	if hasFlag(c, FlagBlocking) {
		cats = append(cats, "@blocking")
	}
	return cats
}

// commandCache keeps the encoded replies of COMMAND and COMMAND DOCS, which
// only change when the table does.
var commandCache cachedReplies

type cachedReplies struct {
	mu   sync.Mutex
	info []byte // COMMAND
	docs []byte // COMMAND DOCS
}

func (c *cachedReplies) reset() {
	c.mu.Lock()
	c.info, c.docs = nil, nil
	c.mu.Unlock()
}

func (c *cachedReplies) get(docs bool) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.info == nil {
		cmds := supportedCommands()
		var w respBuf
		w.array(len(cmds))
		for _, cmd := range cmds {
			appendCommandInfo(&w, cmd)
		}
		c.info = w.b
		w = respBuf{}
		w.array(2 * len(cmds))
		for _, cmd := range cmds {
			w.bulk(cmd.Name)
			appendCommandDocs(&w, cmd)
		}
		c.docs = w.b
	}
	if docs {
		return c.docs
	}
	return c.info
}

// respBuf builds RESP2 replies into a byte slice.
type respBuf struct{ b []byte }

func (w *respBuf) array(n int)     { w.b = fmt.Appendf(w.b, "*%d\r\n", n) }
func (w *respBuf) integer(n int)   { w.b = fmt.Appendf(w.b, ":%d\r\n", n) }
func (w *respBuf) status(s string) { w.b = append(append(append(w.b, '+'), s...), '\r', '\n') }
func (w *respBuf) bulk(s string) {
	w.b = fmt.Appendf(w.b, "$%d\r\n", len(s))
	w.b = append(append(w.b, s...), '\r', '\n')
}

// appendCommandInfo writes a Redis 7 COMMAND entry of 10 fields: name,
// arity, flags, first key, last key, step, ACL categories, tips, key specs
// (empty) and subcommands.
func appendCommandInfo(w *respBuf, c *Command) {
	w.array(10)
	w.bulk(c.fullName)
	w.integer(c.Arity)
	w.array(len(c.Flags))
	for _, f := range c.Flags {
		w.status(f)
	}
	w.integer(c.FirstKey)
	w.integer(c.LastKey)
	w.integer(c.Step)
	cats := aclCategories(c)
	w.array(len(cats))
	for _, cat := range cats {
		w.status(cat)
	}
	w.array(0) // tips
	w.array(0) // key specs
	w.array(len(c.Subcommands))
	for i := range c.Subcommands {
		appendCommandInfo(w, &c.Subcommands[i])
	}
}

// appendCommandDocs writes the COMMAND DOCS map (as a flat array in RESP2)
// of a command: summary, since, group, complexity and subcommands.
func appendCommandDocs(w *respBuf, c *Command) {
	n := 8
	if len(c.Subcommands) > 0 {
		n += 2
	}
	w.array(n)
	w.bulk("summary")
	w.bulk(c.Summary)
	w.bulk("since")
	w.bulk("1.0.0") // Redis versions are not tracked per command; redis-cli only displays it
	w.bulk("group")
	w.bulk(c.Group)
	w.bulk("complexity")
	w.bulk("")
	if len(c.Subcommands) > 0 {
		w.bulk("subcommands")
		w.array(2 * len(c.Subcommands))
		for i := range c.Subcommands {
			s := &c.Subcommands[i]
			w.bulk(s.fullName)
			appendCommandDocs(w, s)
		}
	}
}

// commandListMatches applies COMMAND LIST FILTERBY.
func commandListMatches(c *Command, filter, arg string) bool {
	switch filter {
	case "":
		return true
	case "pattern":
		return match.Match(c.Name, strings.ToLower(arg))
	case "aclcat":
		want := "@" + strings.ToLower(strings.TrimPrefix(arg, "@"))
		for _, cat := range aclCategories(c) {
			if cat == want {
				return true
			}
		}
		return false
	default: // module: no modules
		return false
	}
}

// commandKeys returns the key arguments of args by the command's key
// positions (COMMAND GETKEYS).
func commandKeys(c *Command, args [][]byte) [][]byte {
	if c.FirstKey <= 0 || c.FirstKey >= len(args) {
		return nil
	}
	last := c.LastKey
	if last < 0 {
		last = len(args) + last
	}
	if last >= len(args) {
		last = len(args) - 1
	}
	var keys [][]byte
	for i := c.FirstKey; i <= last; i += c.Step {
		keys = append(keys, args[i])
	}
	return keys
}
