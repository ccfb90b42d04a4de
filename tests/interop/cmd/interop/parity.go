package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"atrest.test/interop/kubecodec"
)

// The config corpora whose every file both loaders must judge alike.
var configDirs = []string{"tests/data/configs/valid", "tests/data/configs/invalid", "tests/bad-input/configs",
	"tests/interop/testdata/configs"}

// The table of deliberate differences, between these markers in docs/interop.md.
const (
	tableDoc   = "docs/interop.md"
	tableBegin = "<!-- interop-differences:begin -->"
	tableEnd   = "<!-- interop-differences:end -->"
)

// readDifferences reads the table's rows: file → what differs ("verdict" or "message").
func readDifferences(repo string) (map[string]string, error) {
	text, err := os.ReadFile(filepath.Join(repo, tableDoc))
	if err != nil {
		return nil, err
	}
	_, rest, ok := strings.Cut(string(text), tableBegin)
	body, _, ok2 := strings.Cut(rest, tableEnd)
	if !ok || !ok2 {
		return nil, fmt.Errorf("%s: no table between %q and %q", tableDoc, tableBegin, tableEnd)
	}
	row := regexp.MustCompile("^\\|\\s*`([^`]+)`\\s*\\|\\s*(verdict|message)\\s*\\|")
	out := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			if _, dup := out[m[1]]; dup {
				return nil, fmt.Errorf("%s: %s is listed twice", tableDoc, m[1])
			}
			out[m[1]] = m[2]
		}
	}
	return out, nil
}

// kubeMessage is kube-apiserver's error without the loader's wrapping (the stage names
// LoadEncryptionConfig and loadConfig put in front; atrest's message is what they wrap).
func kubeMessage(err error) string {
	msg := err.Error()
	for _, p := range []string{"error while parsing file: ", "error while building transformers: ", "error while loading file: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// atrestCheck runs `atrest config check -o json` and returns (valid, kube-style aggregate).
func (o *Options) atrestCheck(path string) (bool, string, error) {
	out, stderr, code, err := o.atrest(nil, "config", "check", "-o", "json", path)
	if err != nil {
		return false, "", err
	}
	var report struct {
		Valid  bool     `json:"valid"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		return false, "", fmt.Errorf("atrest config check exit %d, output not JSON (%v): %s %s", code, err, out, stderr)
	}
	if report.Valid != (code == 0) {
		return false, "", fmt.Errorf("atrest config check: valid=%t but exit %d", report.Valid, code)
	}
	// kube-apiserver aggregates field errors as one bare error or "[e1, e2, …]".
	msg := strings.Join(report.Errors, ", ")
	if len(report.Errors) > 1 {
		msg = "[" + msg + "]"
	}
	return report.Valid, msg, nil
}

func configParity(s *Suite) {
	o := &s.opts
	table, err := readDifferences(o.Repo)
	if err != nil {
		s.Run("config-parity/differences-table", func() error { return err })
		return
	}
	var files []string
	for _, dir := range configDirs {
		entries, err := os.ReadDir(filepath.Join(o.Repo, dir))
		if err != nil {
			s.Run("config-parity/"+dir, func() error { return err })
			continue
		}
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if ext == ".yaml" || ext == ".json" {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	}
	sort.Strings(files)
	for _, file := range files {
		s.Run("config-parity/"+file, func() error {
			what, detail, err := compareConfig(o, file)
			if err != nil {
				return err
			}
			listed, ok := table[file]
			switch {
			case what == "" && ok:
				return fmt.Errorf("listed in %s as a %s difference, but both loaders agree: remove the row", tableDoc, listed)
			case what != "" && !ok:
				return fmt.Errorf("%s differs and is not listed in %s:\n%s", what, tableDoc, detail)
			case what != listed:
				return fmt.Errorf("listed as a %s difference, but the %s differs:\n%s", listed, what, detail)
			}
			return nil
		})
	}
	s.Run("config-parity/differences-table-rows-exist", func() error {
		var missing []string
		for file := range table {
			if _, err := os.Stat(filepath.Join(o.Repo, file)); err != nil {
				missing = append(missing, file)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s lists files that do not exist: %v", tableDoc, missing)
		}
		return nil
	})
}

// compareConfig loads one file with both loaders: "" if they agree; "verdict" if one accepts
// what the other refuses; "message" if both refuse with different field paths or messages.
func compareConfig(o *Options, file string) (what, detail string, err error) {
	codec, kerr := kubecodec.Load(file)
	if codec != nil {
		codec.Close()
	}
	valid, amsg, err := o.atrestCheck(file)
	if err != nil {
		return "", "", err
	}
	kube := "accepts"
	if kerr != nil {
		kube = "refuses: " + kubeMessage(kerr)
	}
	at := "accepts"
	if !valid {
		at = "refuses: " + amsg
	}
	detail = fmt.Sprintf("  kube-apiserver %s\n  atrest         %s", kube, at)
	switch {
	case (kerr == nil) != valid:
		return "verdict", detail, nil
	case kerr != nil && kubeMessage(kerr) != amsg:
		return "message", detail, nil
	}
	return "", detail, nil
}
