// The text chunks of a PNG (tEXt, zTXt, iTXt), read as plain strings: never parsed as HTML.
const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Map keyword → text of every text chunk; throws when the bytes are not a PNG. */
export async function pngText(buffer) {
  const data = new Uint8Array(buffer);
  if (!SIGNATURE.every((byte, i) => data[i] === byte)) throw new Error("not a PNG file");
  const view = new DataView(buffer);
  const latin1 = new TextDecoder("latin1"), utf8 = new TextDecoder("utf-8");
  const found = new Map();
  for (let at = 8; at + 8 <= data.length;) {
    const length = view.getUint32(at), type = latin1.decode(data.subarray(at + 4, at + 8));
    const body = data.subarray(at + 8, Math.min(at + 8 + length, data.length));
    at += 12 + length;
    if (type === "IEND") break;
    if (type !== "tEXt" && type !== "zTXt" && type !== "iTXt") continue;
    const end = body.indexOf(0);
    if (end < 0) continue;
    const keyword = latin1.decode(body.subarray(0, end));
    try {
      if (type === "tEXt") found.set(keyword, latin1.decode(body.subarray(end + 1)));
      else if (type === "zTXt") found.set(keyword, latin1.decode(await inflate(body.subarray(end + 2))));
      else {  // iTXt: compressed flag, method, language\0, translated keyword\0, text
        const compressed = body[end + 1] === 1;
        const language = body.indexOf(0, end + 3), translated = body.indexOf(0, language + 1);
        const text = body.subarray(translated + 1);
        found.set(keyword, utf8.decode(compressed ? await inflate(text) : text));
      }
    } catch { /* a damaged chunk: skip it, the others may still hold the workflow */ }
  }
  return found;
}
