package daemon

import (
	"errors"
	"slices"
	"testing"
)

func TestClosersNewestFirst(t *testing.T) {
	var got []int
	var c closers
	e2 := errors.New("two")
	for i := range 3 {
		c.push(func() error {
			got = append(got, i)
			if i == 2 {
				return e2
			}
			return nil
		})
	}
	if err := c.close(); !errors.Is(err, e2) {
		t.Fatalf("close() = %v, want %v", err, e2)
	}
	if want := []int{2, 1, 0}; !slices.Equal(got, want) {
		t.Fatalf("closed in order %v, want %v", got, want)
	}
	if err := c.close(); err != nil || len(got) != 3 {
		t.Fatalf("second close ran cleanups again: %v, %v", err, got)
	}
}
