// A small line chart on a canvas: the last N points, redrawn on each push.
export class Chart {
  constructor(canvas, { points = 150, unit = "", max = null } = {}) {
    this.canvas = canvas;
    this.points = points;
    this.unit = unit;
    this.max = max;
    this.values = [];
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > this.points) this.values.shift();
    this.canvas.dataset.points = String(this.values.length);
    this.canvas.dataset.last = value === null ? "" : String(value);
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 300;
    const height = canvas.clientHeight || 120;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    const style = getComputedStyle(document.documentElement);
    const line = style.getPropertyValue("--line").trim() || "#ccc";
    const accent = style.getPropertyValue("--accent").trim() || "#2f6f5e";
    const muted = style.getPropertyValue("--muted").trim() || "#666";
    ctx.clearRect(0, 0, width, height);
    const known = this.values.filter((v) => v !== null);
    const top = this.max ?? Math.max(1e-9, ...known) * 1.15;
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;
    for (const f of [0.25, 0.5, 0.75]) {
      ctx.beginPath();
      ctx.moveTo(0, height * f);
      ctx.lineTo(width, height * f);
      ctx.stroke();
    }
    ctx.fillStyle = muted;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(`${+top.toPrecision(3)} ${this.unit}`, 4, 12);
    ctx.strokeStyle = accent;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    this.values.forEach((value, i) => {
      const x = width - (this.values.length - 1 - i) * (width / (this.points - 1));
      if (value === null) { drawing = false; return; }
      const y = height - Math.min(1, value / top) * (height - 16) - 2;
      if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      drawing = true;
    });
    ctx.stroke();
  }
}
