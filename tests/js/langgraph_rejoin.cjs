// LangGraph's JS SDK against a Rillet server: create a thread, stream a run
// (messages-tuple), then rejoin the finished run from its first event (Last-Event-ID -1).
// Usage: node langgraph_rejoin.cjs <api url> <api key> <question>; prints one JSON line.
const { Client } = require("@langchain/langgraph-sdk");

/** The answer's text, from the `messages` events (messages-tuple: [chunk, metadata]). */
function textOf(parts) {
  return parts
    .filter((part) => part.event === "messages")
    .map(({ data: [chunk] }) => (typeof chunk.content === "string" ? chunk.content : ""))
    .join("");
}

async function collect(stream) {
  const parts = [];
  for await (const part of stream) parts.push(part);
  return parts;
}

async function main() {
  const [apiUrl, apiKey, question] = process.argv.slice(2);
  const client = new Client({ apiUrl, apiKey });
  const thread = await client.threads.create();
  let runId = null;
  const streamed = await collect(
    client.runs.stream(thread.thread_id, "agent", {
      input: { messages: [{ role: "user", content: question }] },
      streamMode: "messages-tuple",
      streamResumable: true,
      onRunCreated: (run) => {
        runId = run.run_id;
      },
    }),
  );
  const rejoined = await collect(
    client.runs.joinStream(thread.thread_id, runId, {
      lastEventId: "-1",
      streamMode: "messages-tuple",
    }),
  );
  const run = await client.runs.get(thread.thread_id, runId);
  const summary = (parts) => ({ text: textOf(parts), events: parts.map((part) => part.event) });
  console.log(
    JSON.stringify({
      thread_id: thread.thread_id,
      run_id: runId,
      status: run.status,
      streamed: summary(streamed),
      rejoined: summary(rejoined),
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
