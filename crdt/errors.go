package crdt

import "errors"

// Sentinel errors of the model. Error strings that reach Redis clients follow
// Redis's own wording, so the child can return them unchanged after "ERR ".
var (
	// ErrWrongType is returned when a command meets a key of another type.
	ErrWrongType = errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")
	// ErrNotInteger is returned when a value or increment is not an integer.
	ErrNotInteger = errors.New("ERR value is not an integer or out of range")
	// ErrNotFloat is returned when a value or increment is not a valid float.
	ErrNotFloat = errors.New("ERR value is not a valid float")
	// ErrOverflow is returned when an increment leaves the exact integer
	// range of the model (±2^53-1, the range every region computes exactly).
	ErrOverflow = errors.New("ERR increment or decrement would overflow")
	// ErrNaN is returned when a float increment would produce NaN or Infinity.
	ErrNaN = errors.New("ERR increment would produce NaN or Infinity")
	// ErrHashNotInteger is the hash flavour of ErrNotInteger.
	ErrHashNotInteger = errors.New("ERR hash value is not an integer")
	// ErrHashNotFloat is the hash flavour of ErrNotFloat.
	ErrHashNotFloat = errors.New("ERR hash value is not a float")
	// ErrScoreNaN is returned when a sorted set increment would make the score NaN.
	ErrScoreNaN = errors.New("ERR resulting score is not a number (NaN)")

	// ErrUnsupportedVersion is returned by the decoders for a wire format
	// version this build does not know.
	ErrUnsupportedVersion = errors.New("crdt: unsupported wire format version")
	// ErrCorrupt is returned by the decoders for bytes that are not a valid op.
	ErrCorrupt = errors.New("crdt: corrupt op")
)

// ErrBadRegion is returned for an invalid region id.
var ErrBadRegion = errors.New("crdt: region ids are 1-32 characters of a-z, 0-9 and '-', starting with a letter")
