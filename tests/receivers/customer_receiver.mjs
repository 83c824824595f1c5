// The customer's webhook check, as their app's route runs it (Next.js: `await request.text()`, then
// Node's crypto): hex HMAC-SHA256 of the raw body under TRAINING_WEBHOOK_SECRET, compared with the
// X-Webhook-Signature header. Accepted bodies are appended to the file named by argv[2], one per line;
// rejected ones answer 401. Prints the port it listens on (argv[3], 0 = any free port).
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";

const [accepted, port = "0"] = process.argv.slice(2);
const secret = process.env.TRAINING_WEBHOOK_SECRET;

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const rawBody = Buffer.concat(chunks).toString("utf8"); // what request.text() gives the route
    const signature = req.headers["x-webhook-signature"];
    const expected = crypto.createHmac("sha256", secret).update(rawBody).digest("hex");
    if (signature !== expected) {
      res.writeHead(401, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: "Invalid signature" }));
      return;
    }
    fs.appendFileSync(accepted, rawBody + "\n");
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ received: true }));
  });
});
server.listen(Number(port), "127.0.0.1", () => {
  console.log(server.address().port);
});
