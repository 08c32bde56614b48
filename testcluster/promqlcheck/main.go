// promqlcheck parses each line of stdin as PromQL with Prometheus' own parser and
// prints one JSON line per query: the error, or "" when it parses.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	promql := parser.NewParser(parser.Options{})
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		_, err := promql.ParseExpr(scanner.Text())
		message := ""
		if err != nil {
			message = err.Error()
		}
		line, _ := json.Marshal(map[string]string{"query": scanner.Text(), "error": message})
		fmt.Println(string(line))
	}
}
