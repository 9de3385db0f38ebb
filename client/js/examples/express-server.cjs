// The API guide's Express integration, as written there. Run it with
//   npm install express && node examples/express-server.cjs
// while llamahomed runs: LlamaServer finds the local daemon's address and admin token itself
// (or set LLAMAHOME_ENDPOINT and LLAMAHOME_API_KEY). `require('llamahome')` of this ES module
// package needs Node 20.19+ (require of ES modules); with older Node use `await import()`.
const express = require('express');
const { LlamaServer } = require('llamahome');

const app = express();
app.use(express.json());
const llama = new LlamaServer();

app.post('/process', async (req, res) => {
  const result = await llama.process(req.body.prompt);
  res.json(result);
});

// Not in the guide: turn the client's typed errors into the daemon's status and envelope.
app.use((err, req, res, next) => {
  if (err && err.code && err.status) {
    res.status(err.status).json({ error: { code: err.code, message: err.message, details: err.details } });
  } else {
    next(err);
  }
});

const port = Number(process.env.PORT ?? 3000);
app.listen(port, () => console.log(`listening on http://127.0.0.1:${port}`));
