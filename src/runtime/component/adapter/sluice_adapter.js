// Runs an unchanged AWS Lambda Node.js handler as a Sluice component (world `handler` in
// wit/sluice.wit), the way aws-lambda-ric runs it on Lambda.
//
// `sluice build` fills in the placeholders and runs componentize-js on this file, which runs
// its top level at build time and snapshots the result: the handler's own top level (Lambda's
// init phase) runs once, at build, and an exception there fails the build.
//
// componentize-js evaluates every file as an ES module and has no CommonJS loader, so a
// CommonJS handler (index.js, index.cjs) is embedded: its source replaces the placeholder line
// inside the wrapper below, the one Node puts around a CommonJS module (but, inside an ES
// module, it runs in strict mode). An ES-module handler (index.mjs) is imported: the build
// copies the function's folder beside this file, so that the handler's own relative imports
// resolve, and empties that line.
//
// The placeholders, __SLUICE_HANDLER_<NAME>__, each appear only where they are replaced:
//   ESM     the specifier of the ES module to import, './index.mjs'; for a CommonJS handler,
//           this file itself, './sluice_adapter.js', which exports no handler
//   EXPORT  the handler's export name: `handler` for `index.handler`
//   FILE    the handler's file in the function's folder: `index.js`
//   SOURCE  (a whole line) the CommonJS handler's source; empty for an ES module
import * as esModule from '__SLUICE_HANDLER_ESM__';

const EXPORT = '__SLUICE_HANDLER_EXPORT__';
const FILE = '__SLUICE_HANDLER_FILE__';

// componentize-js has no CommonJS loader, and the component no file system to load from.
function requireUnbundled(name) {
  throw new Error(
    `Cannot require('${name}'): a Sluice component cannot load other modules. ` +
      'Bundle the handler and its dependencies into one file (e.g. esbuild --bundle) first.',
  );
}

const cjsModule = { exports: {} };
// The lines of this file that hold an embedded handler's source: their frames are reported
// with the handler's own file and line numbers. (lineNumber is SpiderMonkey's.)
const SOURCE_START = new Error().lineNumber + 2;
(function (exports, require, module, __filename, __dirname) {
__SLUICE_HANDLER_SOURCE__
}).call(cjsModule.exports, cjsModule.exports, requireUnbundled, cjsModule, `/${FILE}`, '/');
const SOURCE_END = new Error().lineNumber - 2;

const handler = cjsModule.exports[EXPORT] ?? esModule[EXPORT];
// `handle` is what esModule holds when it is this file: never call it back.
if (typeof handler !== 'function' || handler === handle) {
  throw new Error(`Handler '${EXPORT}' missing on module '${FILE}'`);
}

// An error record of the world; componentize-js turns a thrown value into `err`.
function failure(kind, errorType, message, stackTrace = []) {
  return { kind, errorType, message, stackTrace };
}

// The handler's frames of an error's stack: those inside this adapter, and all the frames
// that called them, are left out. The world wants the innermost frame last; the engine gives
// it first.
function handlerFrames(stack) {
  const frames = [];
  for (const frame of String(stack ?? '').split('\n')) {
    const own = /^(.*)@sluice_adapter\.js:(\d+):(\d+)$/.exec(frame);
    if (own && !(own[2] >= SOURCE_START && own[2] <= SOURCE_END)) break;
    if (frame) frames.push(own ? `${own[1]}@${FILE}:${own[2] - SOURCE_START + 1}:${own[3]}` : frame);
  }
  return frames.reverse();
}

// aws-lambda-ric's error response: an Error's name, message and stack; anything else thrown
// is reported by its type. SpiderMonkey reports running out of memory by throwing this string.
function thrownFailure(e) {
  if (e === 'out of memory') return failure('memory', 'Runtime.OutOfMemory', e);
  if (!(e instanceof Error)) return failure('handler', typeof e, String(e));
  return failure('handler', e.name, e.message, handlerFrames(e.stack));
}

// Calls the handler as aws-lambda-ric does: with a callback and a context that can also
// complete the invocation (succeed, fail, done), whichever of those, a returned promise, or
// (for handlers that take no callback) a returned value comes first.
function invoke(event, ctx) {
  return new Promise((resolve, reject) => {
    const callback = (err, value) => (err == null ? resolve(value) : reject(err));
    const deadlineMs = Number(ctx.deadlineMs);
    const context = {
      awsRequestId: ctx.requestId,
      functionName: ctx.functionName,
      functionVersion: '$LATEST',
      invokedFunctionArn: ctx.invokedFunctionArn,
      // A string: aws-lambda-ric reads it from AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
      memoryLimitInMB: String(ctx.memoryLimitMb),
      logGroupName: `/aws/lambda/${ctx.functionName}`,
      logStreamName: `sluice/${ctx.functionName}`,
      identity: undefined,
      clientContext: undefined,
      // Settable for compatibility; an instance never outlives its invocation anyway.
      callbackWaitsForEmptyEventLoop: true,
      getRemainingTimeInMillis: () => Math.max(deadlineMs - Date.now(), 0),
      succeed: (value) => callback(null, value),
      fail: (err) => callback(err ?? 'handled'),
      done: callback,
    };
    const returned = handler(event, context, callback);
    if (typeof returned?.then === 'function') returned.then(resolve, reject);
    else if (handler.length < 3) resolve(returned);
  });
}

export async function handle(event, context) {
  let payload;
  try {
    payload = JSON.parse(event);
  } catch (e) {
    throw failure('handler', 'Runtime.UnmarshalError', `Unable to unmarshal input: ${e.message}`);
  }
  let result;
  try {
    result = await invoke(payload, context);
  } catch (e) {
    throw thrownFailure(e);
  }
  try {
    return JSON.stringify(result) ?? 'null';
  } catch (e) {
    throw failure('invalid-response', 'Runtime.MarshalError', `Unable to marshal response: ${e.message}`);
  }
}
