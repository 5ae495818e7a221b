import type { ApiError } from "../api/client";

/** A refusal as the API worded it: `code: message`. */
export function ErrorText({ error, testId }: { error: ApiError | null | undefined; testId?: string }) {
  if (!error) return null;
  return (
    <p className="error" role="alert" data-testid={testId}>
      <code>{error.code}</code>: {error.message}
    </p>
  );
}
