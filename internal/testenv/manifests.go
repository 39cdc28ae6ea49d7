package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Samples reads every object of config/samples/broker_*.yaml, in file order,
// namespaced to namespace. Files may hold several documents.
func Samples(namespace string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(RepoRoot(), "config", "samples", "broker_*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no samples found in config/samples: %v", err)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		objs, err := ReadManifests(f)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			o.SetNamespace(namespace)
			out = append(out, o)
		}
	}
	return out, nil
}

// ReadManifests parses a YAML file of one or more documents.
func ReadManifests(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", filepath.Base(path), err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}
