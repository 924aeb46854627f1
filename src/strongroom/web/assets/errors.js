// Errors the API answers (RFC 9457 problem+json) as one JavaScript type.

/** A refused request: HTTP status, the API's stable `code` and its `detail`. */
export class ApiError extends Error {
  constructor(status, code, detail, body = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
  }
}

/** Build an ApiError from a failed fetch Response. */
export async function errorFromResponse(response) {
  const text = await response.text().catch(() => "");
  return errorFromText(response.status, text);
}

/** Build an ApiError from a status and the body text of a failed answer. */
export function errorFromText(status, text) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (body && typeof body === "object" && typeof body.detail === "string") {
    return new ApiError(status, String(body.code || ""), body.detail, body);
  }
  return new ApiError(status, "", fallbackDetail(status), body);
}

/** The error a request gets when the connection failed before any answer. */
export function connectionError() {
  return new ApiError(0, "network", "the connection to the server was lost");
}

function fallbackDetail(status) {
  if (status === 404) {
    return "not found on the server";
  }
  if (status === 413) {
    return "too large for the server";
  }
  if (status >= 500) {
    return `the server failed (HTTP ${status}); try again later`;
  }
  return `the server refused this (HTTP ${status})`;
}
