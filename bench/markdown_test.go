package bench

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpliceSection(t *testing.T) {
	const sec = "## generated\n\nfigures\n"
	for _, tc := range []struct {
		name, doc, want string
		err             bool
	}{
		{"empty file", "", MarkdownBegin + "\n## generated\n\nfigures\n" + MarkdownEnd + "\n", false},
		{"no markers: appended at the end", "# Benchmarks\n\ntext by hand\n\n\n",
			"# Benchmarks\n\ntext by hand\n\n" + MarkdownBegin + "\n## generated\n\nfigures\n" + MarkdownEnd + "\n", false},
		{"markers: only the inside changes", "# B\n\nbefore\n" + MarkdownBegin + "\nold figures\n" + MarkdownEnd + "\nafter, by hand\n",
			"# B\n\nbefore\n" + MarkdownBegin + "\n## generated\n\nfigures\n" + MarkdownEnd + "\nafter, by hand\n", false},
		{"begin without end", "x\n" + MarkdownBegin + "\n", "", true},
		{"end before begin", MarkdownEnd + "\n" + MarkdownBegin + "\n", "", true},
		{"two sections", MarkdownBegin + MarkdownEnd + MarkdownBegin + MarkdownEnd, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := spliceSection([]byte(tc.doc), []byte(sec))
			if tc.err {
				if !errors.Is(err, ErrMarkers) {
					t.Fatalf("err %v, want ErrMarkers", err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v\nwant %q", got, err, tc.want)
			}
			// Refreshing again changes nothing outside the markers.
			again, err := spliceSection(got, []byte("other\n"))
			if err != nil || !strings.HasPrefix(string(again), string(got[:strings.Index(string(got), MarkdownBegin)])) ||
				!strings.HasSuffix(string(again), string(got[strings.Index(string(got), MarkdownEnd):])) {
				t.Fatalf("second refresh: %q, %v", again, err)
			}
		})
	}
}

func TestUpdateMarkdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	os.WriteFile(path, []byte("# Benchmarks\n\nWritten by the lead.\n"), 0o644)
	rep := &Report{Scenario: smallScenario(), ScenarioText: "small", Ops: AllOps(), Setup: Setup{Runs: 1},
		Results: []Result{{Tool: "mover", Op: FullExport, Runs: []Sample{{Seconds: 1}}, MBps: Stat{67, 67, 67}}}}
	for range 2 {
		if err := UpdateMarkdown(path, rep); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	s := string(b)
	if !strings.HasPrefix(s, "# Benchmarks\n\nWritten by the lead.\n\n"+MarkdownBegin) || strings.Count(s, MarkdownBegin) != 1 ||
		!strings.HasSuffix(s, MarkdownEnd+"\n") || !strings.Contains(s, "| mover | full export |") || !strings.Contains(s, "Machine:") {
		t.Fatalf("BENCHMARKS.md:\n%s", s)
	}
}
