// A worker that decodes JPEG 2000 codestreams off the page's thread, with OpenJPEG compiled to WebAssembly
// (vendor/openjpeg, loaded once): a message { id, codestream } (bytes) is answered with { id, info, samples }, the
// samples as the codestream holds them (one component: width x height, bitsPerSample <= 8 in one byte each, else
// two, little-endian; signed when info.isSigned), or { id, error }.
/* global OpenJPEGWASM */
const VENDOR = "/static/vendor/openjpeg/";
importScripts(`${VENDOR}openjpegwasm_decode.js`);
const codec = OpenJPEGWASM({ locateFile: (name) => `${VENDOR}${name}`, print: () => {}, printErr: () => {} });

self.onmessage = async ({ data: { id, codestream } }) => {
  try {
    const openjpeg = await codec;
    const decoder = new openjpeg.J2KDecoder();
    try {
      decoder.getEncodedBuffer(codestream.length).set(codestream);
      decoder.decode();
      const { width, height, bitsPerSample, componentCount, isSigned } = decoder.getFrameInfo();
      const samples = decoder.getDecodedBuffer().slice(); // out of the WebAssembly heap, to transfer
      self.postMessage({ id, info: { width, height, bitsPerSample, componentCount, isSigned }, samples: samples.buffer },
        [samples.buffer]);
    } finally {
      decoder.delete();
    }
  } catch (error) {
    self.postMessage({ id, error: String(error?.message ?? error) });
  }
};
