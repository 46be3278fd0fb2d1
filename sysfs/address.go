package sysfs

import (
	"fmt"
	"strconv"
	"strings"
)

// Address is a PCI function address in the kernel's canonical form
// "dddd:bb:dd.f" (lower-case hex). The zero value is "no address".
type Address string

// ParseAddress validates s and returns it in canonical lower-case form.
// It accepts only the full form the kernel uses in sysfs: a domain of 4 to 8
// hex digits (VMD domains have 5), a 2-digit bus, a 2-digit device below 0x20
// and a function 0-7. Short forms such as "3b:02.0" are rejected so that an
// address in a config file always names one function unambiguously.
func ParseAddress(s string) (Address, error) {
	bad := func(why string) (Address, error) {
		return "", fmt.Errorf("invalid PCI address %q: %s (want dddd:bb:dd.f, e.g. 0000:3b:02.1)", s, why)
	}
	domain, rest, ok := strings.Cut(s, ":")
	if !ok {
		return bad("missing ':'")
	}
	bus, rest, ok := strings.Cut(rest, ":")
	if !ok {
		return bad("missing domain")
	}
	dev, fn, ok := strings.Cut(rest, ".")
	if !ok {
		return bad("missing '.' before the function")
	}
	if len(domain) < 4 || len(domain) > 8 || !isHex(domain) {
		return bad("domain must be 4 to 8 hex digits")
	}
	if len(bus) != 2 || !isHex(bus) {
		return bad("bus must be 2 hex digits")
	}
	if len(dev) != 2 || !isHex(dev) {
		return bad("device must be 2 hex digits")
	}
	if d, _ := strconv.ParseUint(dev, 16, 8); d > 0x1f {
		return bad("device must be at most 1f")
	}
	if len(fn) != 1 || fn[0] < '0' || fn[0] > '7' {
		return bad("function must be a digit 0-7")
	}
	return Address(strings.ToLower(s)), nil
}

// MustParseAddress is ParseAddress for constants in tests and fixtures; it
// panics on a malformed literal.
func MustParseAddress(s string) Address {
	a, err := ParseAddress(s)
	if err != nil {
		panic(err)
	}
	return a
}

func (a Address) String() string { return string(a) }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}
