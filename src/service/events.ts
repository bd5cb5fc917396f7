import { EventEmitter } from 'node:events';

export interface HubEvent {
  team: string;
  payload: { type: string } & Record<string, unknown>;
}

/** Approval and execution events, for `GET /v1/events`; subscribers filter by team. */
export class EventHub {
  private readonly emitter = new EventEmitter();

  constructor() {
    // Every dashboard tab is a subscriber.
    this.emitter.setMaxListeners(0);
  }

  publish(team: string, payload: { type: string } & Record<string, unknown>): void {
    this.emitter.emit('event', { team, payload } satisfies HubEvent);
  }

  /** `team` null: every team (admin). Returns the unsubscribe function. */
  subscribe(team: string | null, fn: (e: HubEvent) => void): () => void {
    const listener = (e: HubEvent) => {
      if (team === null || e.team === team) fn(e);
    };
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }

  listenerCount(): number {
    return this.emitter.listenerCount('event');
  }
}
