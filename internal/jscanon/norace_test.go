//go:build !race

package jscanon

const raceEnabled = false
