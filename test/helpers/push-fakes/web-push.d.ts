// web-push ships no types; the tests use it only as an independent implementation to check the Web Push fake against.
declare module 'web-push' {
  interface RequestDetails {
    method: string;
    headers: Record<string, string | number>;
    body: Buffer | null;
    endpoint: string;
  }
  const webpush: {
    generateVAPIDKeys(): { publicKey: string; privateKey: string };
    generateRequestDetails(
      subscription: { endpoint: string; keys: { p256dh: string; auth: string } },
      payload: string | Buffer,
      options: { vapidDetails: { subject: string; publicKey: string; privateKey: string }; TTL?: number; urgency?: string; topic?: string; contentEncoding?: string },
    ): RequestDetails;
  };
  export default webpush;
}
