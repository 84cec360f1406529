/**
 * A small typed event emitter: browsers have EventTarget and Node has EventEmitter, but neither types
 * its payloads per event name, and the client must run in both without dependencies.
 */
export type Listener<T> = (payload: T) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /**
   * Where an exception thrown by a listener goes. By default it is rethrown on a later turn, where the
   * platform reports it (window.onerror, uncaughtException) as it would for a DOM event listener,
   * without leaving the client half-updated.
   */
  onListenerError: (error: unknown, type: keyof Events) => void = (error) => {
    setTimeout(() => {
      throw error;
    }, 0);
  };

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(type, listener);
  }

  /** Adds a listener that is removed after its first call. */
  once<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(type, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    this.listeners.get(type)?.delete(listener as Listener<never>);
  }

  listenerCount(type: keyof Events): number {
    return this.listeners.get(type)?.size ?? 0;
  }

  /** Calls every listener; one that throws does not stop the others (see onListenerError). */
  protected emit<K extends keyof Events>(type: K, payload: Events[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(payload);
      } catch (e) {
        this.onListenerError(e, type);
      }
    }
  }
}
