// Package passwordhash defines how MQTT passwords are stored in the auth
// bundle: the operator hashes, the broker verifies. A plain password never
// enters the bundle.
//
// Two formats, chosen by where the password comes from:
//
//   - bcrypt ("$2a$..."), cost 10, for passwords a person chose (MQTTUser
//     passwordSecretRef). Such passwords may be guessable, so a stolen bundle
//     must be slow to attack offline. bcrypt needs little memory, so a
//     reconnect storm cannot run a broker pod out of memory the way a
//     memory-hard KDF could; the broker also caches verified credentials.
//   - salted SHA-256 ("$sha256$<salt>$<digest>", base64 without padding) for
//     passwords the operator generated: 32 random bytes carry 256 bits of
//     entropy, so no offline attack can enumerate them and a slow KDF would
//     only cost CPU on every connect.
//
// bcrypt reads at most 72 bytes; longer chosen passwords are refused rather
// than silently truncated.
package passwordhash

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// BcryptCost is the bcrypt work factor: about 50 ms per check on one core.
const BcryptCost = 10

// MaxBcryptCost bounds the work factor of any bcrypt hash this package
// verifies or accepts. Each step doubles the work: cost 31 is about 60 hours
// a check, and a hash is data a tenant can edit (the auth-state Secret, a
// hand-written bundle), so without a bound one edited hash could make the
// operator or a broker spin for days. 12 is four times BcryptCost.
const MaxBcryptCost = 12

// MaxSaltBytes bounds the salt of a sha256 hash, whose cost grows with it.
const MaxSaltBytes = 64

// ErrCostTooHigh means a bcrypt hash asks for more work than MaxBcryptCost.
var ErrCostTooHigh = fmt.Errorf("bcrypt cost above %d", MaxBcryptCost)

// MaxChosenPasswordBytes is bcrypt's input limit.
const MaxChosenPasswordBytes = 72

const sha256Prefix = "$sha256$"

var b64 = base64.RawStdEncoding

// ErrUnknownFormat means a hash is in neither supported format.
var ErrUnknownFormat = errors.New("unknown password hash format")

// ValidateChosen reports why a person-chosen password cannot be used, or
// nil. The error never contains the password.
func ValidateChosen(password string) error {
	if password == "" {
		return errors.New("password is empty")
	}
	if len(password) > MaxChosenPasswordBytes {
		return fmt.Errorf("password is %d bytes; at most %d are allowed (bcrypt ignores the rest)", len(password), MaxChosenPasswordBytes)
	}
	return nil
}

// HashChosen hashes a person-chosen password with bcrypt.
func HashChosen(password string) (string, error) {
	if err := ValidateChosen(password); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), BcryptCost)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return string(h), nil
}

// HashGenerated hashes a high-entropy generated password with a salt the
// caller provides (at least 16 random bytes).
func HashGenerated(password string, salt []byte) (string, error) {
	if len(password) < 32 {
		return "", errors.New("generated passwords must be at least 32 characters")
	}
	if len(salt) < 16 {
		return "", errors.New("salt must be at least 16 bytes")
	}
	return sha256Prefix + b64.EncodeToString(salt) + "$" + b64.EncodeToString(saltedDigest(salt, password)), nil
}

func saltedDigest(salt []byte, password string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(password))
	return h.Sum(nil)
}

// Verify reports whether password matches hash, in time that does not depend
// on how much of it matched.
func Verify(hash, password string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		if err := checkBcryptCost(hash); err != nil {
			return false, err
		}
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	case strings.HasPrefix(hash, sha256Prefix):
		salt, digest, err := parseSHA256(hash)
		if err != nil {
			return false, err
		}
		return subtle.ConstantTimeCompare(saltedDigest(salt, password), digest) == 1, nil
	default:
		return false, ErrUnknownFormat
	}
}

// Validate checks that hash is well formed, without a password.
func Validate(hash string) error {
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return checkBcryptCost(hash)
	case strings.HasPrefix(hash, sha256Prefix):
		_, _, err := parseSHA256(hash)
		return err
	default:
		return ErrUnknownFormat
	}
}

// checkBcryptCost refuses malformed bcrypt hashes and those above
// MaxBcryptCost, before any work is done.
func checkBcryptCost(hash string) error {
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return fmt.Errorf("malformed bcrypt hash: %w", err)
	}
	if cost > MaxBcryptCost {
		return fmt.Errorf("bcrypt hash with cost %d: %w", cost, ErrCostTooHigh)
	}
	return nil
}

// IsSlow reports whether verifying hash costs a KDF run (worth caching).
func IsSlow(hash string) bool { return strings.HasPrefix(hash, "$2") }

func parseSHA256(hash string) (salt, digest []byte, err error) {
	parts := strings.Split(strings.TrimPrefix(hash, sha256Prefix), "$")
	if len(parts) != 2 {
		return nil, nil, errors.New("malformed sha256 hash: want $sha256$<salt>$<digest>")
	}
	if salt, err = b64.DecodeString(parts[0]); err != nil || len(salt) < 16 || len(salt) > MaxSaltBytes {
		return nil, nil, errors.New("malformed sha256 hash: bad salt")
	}
	if digest, err = b64.DecodeString(parts[1]); err != nil || len(digest) != sha256.Size {
		return nil, nil, errors.New("malformed sha256 hash: bad digest")
	}
	return salt, digest, nil
}
