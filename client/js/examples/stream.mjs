// Stream a generation to stdout:  node examples/stream.mjs "Once upon a time"
import { LlamaClient } from 'llamahome';

const client = new LlamaClient(); // the local daemon's address and admin token
const stream = client.streamResponse(process.argv[2] ?? 'Once upon a time', { max_tokens: 60 });
for await (const part of stream) process.stdout.write(part.chunk);
console.log(`\n${JSON.stringify(stream.final.usage)}`);
