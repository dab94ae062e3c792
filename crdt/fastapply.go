package crdt

// MergeStringRecord is the computation behind the engine's fast remote
// apply of a string write (child.Engine.Apply): it merges op into rec, the
// state record of a live string as database 0 stores it (element only, no
// expiry register; nil when the key has no state at all), and returns the
// record after the merge.
//
// ok is false, and the op must go the general way, unless all of these
// hold: the op writes one string element and no expiry; rec decodes and
// holds no expiry register; the merge meets no conflict (the general path
// records conflicts in the conflict log); the string is live afterwards. In
// that case the result is the state the general merge produces.
func MergeStringRecord(rec []byte, op *Op) (out []byte, ok bool) {
	if len(op.Elems) != 1 || op.Exp != nil || op.Elems[0].Type != TypeString {
		return nil, false
	}
	el := &Elem{}
	if rec != nil {
		e, x, err := UnmarshalState(TypeString, rec)
		if err != nil || len(x.Entries) > 0 || len(x.Rm) > 0 {
			return nil, false
		}
		el = e
	}
	if c := el.merge(op.ID, op.TS, &op.Elems[0]); c != "" || !el.Live() {
		return nil, false
	}
	return MarshalState(TypeString, el, nil), true
}
