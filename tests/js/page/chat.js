// Asks a Rillet server from a page on another origin, as a web app would: an API key in
// `Authorization` (so the browser sends a CORS preflight first), LangGraph's
// POST /threads and POST /threads/{id}/runs/stream, the answer read from the stream as it
// arrives. Settings in the URL's fragment: #api=<url>&key=<api key>&question=<text>.
const params = new URLSearchParams(location.hash.slice(1));
const api = params.get("api");
const question = params.get("question") ?? "What is Rillet?";
const headers = { Authorization: `Bearer ${params.get("key")}`, "Content-Type": "application/json" };
const $ = (id) => document.getElementById(id);

/** Server-sent events from a response body, as {event, data} with data parsed. */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const event = lines.find((line) => line.startsWith("event:"))?.slice(6).trim() ?? "message";
      const data = lines.filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim());
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function post(path, body) {
  const response = await fetch(api + path, { method: "POST", headers, body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`HTTP ${response.status} from ${path}: ${await response.text()}`);
  return response;
}

async function ask() {
  $("api").textContent = api;
  $("origin").textContent = location.origin;
  $("question").textContent = question;
  const thread = await (await post("/threads", {})).json();
  const stream = await post(`/threads/${thread.thread_id}/runs/stream`, {
    assistant_id: "agent",
    input: { messages: [{ role: "user", content: question }] },
    stream_mode: ["messages-tuple"],
  });
  $("run").textContent = stream.headers.get("Content-Location") ?? "(not exposed)";
  for await (const { event, data } of serverSentEvents(stream.body)) {
    if (event === "messages" && typeof data[0].content === "string") $("answer").textContent += data[0].content;
    if (event === "error") throw new Error(`${data.error}: ${data.message}`);
  }
}

function show(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

ask().then(() => show("done", "done"), (error) => show("error", String(error)));
