// Package config defines the pool configuration of sriov-cdi: its own YAML or
// JSON format and the SR-IOV network device plugin's JSON format, mapped onto
// the same model. Decoding is strict (unknown fields are errors) and
// validation names the file, pool and field of every problem and says what
// would be valid. It only describes intent: matching devices against
// selectors is a pure function here; reading the host is not.
package config
