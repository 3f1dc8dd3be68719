package batch

import (
	"slices"
	"testing"
)

// What is waiting goes together, at most max at a time, in order, and
// nothing is lost when the channel closes.
func TestDrain(t *testing.T) {
	ch := make(chan int, 10)
	for i := range 7 {
		ch <- i
	}
	close(ch)
	var sizes []int
	var got []int
	Drain(ch, 3, func(b []int) {
		sizes = append(sizes, len(b))
		got = append(got, b...)
	})
	if !slices.Equal(sizes, []int{3, 3, 1}) || !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6}) {
		t.Fatalf("batches of %v carrying %v", sizes, got)
	}
}

// A lone item is sent at once, not held for company.
func TestDrainSendsALoneItem(t *testing.T) {
	ch := make(chan int)
	sent := make(chan []int)
	go Drain(ch, 8, func(b []int) { sent <- slices.Clone(b) })
	ch <- 42
	if b := <-sent; !slices.Equal(b, []int{42}) {
		t.Fatalf("sent %v", b)
	}
	close(ch)
}
