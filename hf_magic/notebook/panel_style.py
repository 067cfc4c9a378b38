"""The chat panel's stylesheet and its one script (Shift+Enter presses Send), kept apart from its widgets."""

# The panel's frame; the turns inside it are styled by turn_drawing.TURN_CSS, as in cell outputs.
PANEL_CSS = """<style>
.hf-magic-panel { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 8px; padding: 8px 10px;
  background: var(--jp-layout-color1, #fff); max-width: 900px; }
.hf-magic-panel .hfm-title { font-weight: 600; font-size: 1.05em; }
.hf-magic-panel .hfm-status, .hf-magic-panel .hfm-subtitle { font-size: .9em; color: var(--jp-ui-font-color2, #666); }
.hf-magic-panel .hfm-empty { opacity: .55; font-style: italic; padding: 14px; text-align: center; }
.hf-magic-panel .hfm-label { text-align: right; padding-right: 8px; line-height: 28px; }
.hf-magic-panel .hfm-note { font-size: .85em; opacity: .75; }
.hf-magic-panel .hf-magic-transcript { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px;
  background: var(--jp-layout-color1, #fff); }
</style>"""

# Shift+Enter in the message box presses Send. Widgets offer no key events, so a small script (run once per
# page) listens in the capture phase, before ipywidgets stops the key from reaching the notebook. Blurring
# first makes the text box sync its value to the kernel before the click arrives.
SHIFT_ENTER_JS = """
if (!window.__hfMagicShiftEnter) {
  window.__hfMagicShiftEnter = true;
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || !event.shiftKey || !event.target || !event.target.closest) return;
    const box = event.target.closest('.hf-magic-input');
    const panel = box && box.closest('.hf-magic-panel');
    const send = panel && panel.querySelector('.hf-magic-send');
    if (!send || send.disabled) return;
    event.preventDefault();
    event.stopPropagation();
    event.target.blur();
    send.click();
    event.target.focus();
  }, true);
}
"""
