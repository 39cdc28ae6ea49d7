package broker_test

import "github.com/mqtt-operator/mqtt-operator/internal/passwordhash"

func passwordHashChosen(p string) (string, error) { return passwordhash.HashChosen(p) }
