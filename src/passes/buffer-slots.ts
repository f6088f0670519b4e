/**
 * Buffer slots: the memory plan for WebGPU. A dispatch may not bind one `GPUBuffer` as writable and also bind it
 * again (even a disjoint range), so activations cannot all live at offsets of a single arena buffer. Instead each
 * activation gets a *slot* — a buffer that activations with disjoint lifetimes share in turn — so a kernel's operands
 * and result are always in different buffers while memory is still reused. Views (reshapes) share their storage's
 * slot. Slots are assigned greedily in schedule order, reusing the free slot closest in size (best fit), so the total
 * stays near the arena plan's peak.
 * @module
 */
import type { Node } from '../ir/node.js';
import type { MemoryPlan } from './memory-plan.js';

/**
 * Where one activation lives.
 * @internal
 */
export interface SlotAssignment {
  /** Slot index. */
  readonly slot: number;
  /** Bytes of the value. */
  readonly bytes: number;
}

/**
 * The slot of every activation, and the size each slot needs.
 * @internal
 */
export interface SlotPlan {
  /** Bytes of each slot (the largest value it ever holds, rounded up to 256). */
  readonly slotBytes: number[];
  /** Activation (or view) to its slot. */
  readonly of: ReadonlyMap<Node, SlotAssignment>;
}

/**
 * Assigns slots to the buffers of `plan`, starting from `slotBytes` (the slots of earlier plans, reused and grown
 * as needed: plans of one engine never run at the same time). `pinned` values (graph outputs, which every plan must
 * leave in the same place) get their given slot, which no other value uses.
 * @internal
 */
export function assignSlots(plan: MemoryPlan, slotBytes: number[] = [], pinned: ReadonlyMap<Node, number> = new Map()): SlotPlan {
  const sizes = [...slotBytes];
  const reserved = new Set(pinned.values());
  for (const s of reserved) while (sizes.length <= s) sizes.push(256);
  const freeAt = sizes.map((_b, s) => (reserved.has(s) ? Infinity : -1)); // last step at which the slot is busy
  const of = new Map<Node, SlotAssignment>();
  const storages = plan.buffers.filter((b) => !b.aliasOf).sort((a, b) => a.firstStep - b.firstStep || b.bytes - a.bytes);
  for (const b of storages) {
    const need = Math.max(256, Math.ceil(b.bytes / 256) * 256);
    const pin = pinned.get(b.node);
    if (pin !== undefined) {
      sizes[pin] = Math.max(sizes[pin], need);
      of.set(b.node, { slot: pin, bytes: b.bytes });
      continue;
    }
    let best = -1;
    for (let s = 0; s < sizes.length; s++) {
      if (freeAt[s] >= b.firstStep) continue;
      // best fit: the smallest slot that is big enough, else the largest one (which then grows)
      if (best < 0) best = s;
      else {
        const fits = sizes[s] >= need;
        const bestFits = sizes[best] >= need;
        if ((fits && (!bestFits || sizes[s] < sizes[best])) || (!fits && !bestFits && sizes[s] > sizes[best])) best = s;
      }
    }
    if (best < 0) {
      best = sizes.push(need) - 1;
      freeAt.push(-1);
    }
    sizes[best] = Math.max(sizes[best], need);
    freeAt[best] = b.lastStep;
    of.set(b.node, { slot: best, bytes: b.bytes });
  }
  for (const b of plan.buffers) if (b.aliasOf) of.set(b.node, { slot: of.get(b.aliasOf)!.slot, bytes: b.bytes });
  return { slotBytes: sizes, of };
}
