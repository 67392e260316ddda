//! Synthetic-camera scenes and motion settings the whole-system tests share, and the config
//! text that plays them (the scene file beside the config, `{dir}/scene.toml` for a
//! [`crate::system::LocalSystem`], `/etc/mecam/scene.toml` under systemd).

/// A still scene: noise over a textured wall, nothing moves. Any motion event here is a fault
/// mistaken for motion.
pub const STILL: &str = "noise = 2.0\n[background]\ntexture = \"bricks\"\n";

/// A short crossing every 1.5 s, each on another row and in turn direction (a crossing
/// repeated on one path would be learned as background motion), repeating every 12 s: with
/// [`MOTION_FAST`], one event of about a second per crossing, the first at 0 s.
pub const CROSSINGS: &str = r#"
repeat = 12.0
noise = 2.0
[background]
texture = "bricks"
[[object]]
name = "o0"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 0.0
end = 0.6
from = [0.05, 0.15]
to = [0.95, 0.15]
[[object]]
name = "o1"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 1.5
end = 2.1
from = [0.95, 0.35]
to = [0.05, 0.35]
[[object]]
name = "o2"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 3.0
end = 3.6
from = [0.05, 0.55]
to = [0.95, 0.55]
[[object]]
name = "o3"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 4.5
end = 5.1
from = [0.95, 0.75]
to = [0.05, 0.75]
[[object]]
name = "o4"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 6.0
end = 6.6
from = [0.05, 0.25]
to = [0.95, 0.25]
[[object]]
name = "o5"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 7.5
end = 8.1
from = [0.95, 0.45]
to = [0.05, 0.45]
[[object]]
name = "o6"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 9.0
end = 9.6
from = [0.05, 0.65]
to = [0.95, 0.65]
[[object]]
name = "o7"
size = [0.2, 0.2]
color = [230, 40, 40]
start = 10.5
end = 11.1
from = [0.95, 0.85]
to = [0.05, 0.85]
"#;

/// One slow crossing of 8 s from 1 s, repeating every 14 s: with [`MOTION_FAST`] a recording
/// stays in progress for several seconds, long enough to cut it off.
pub const SLOW_CROSSING: &str = r#"
repeat = 14.0
noise = 2.0
[background]
texture = "bricks"
[[object]]
name = "walker"
size = [0.2, 0.4]
color = [230, 40, 40]
start = 1.0
end = 9.0
from = [-0.1, 0.5]
to = [1.1, 0.5]
"#;

/// `[motion]` settings that start an event at once and end it soon after the motion stops.
pub const MOTION_FAST: &str = "analysis_fps = 10.0\nquiet_gap_s = 0.4\nmin_duration_s = 0.1\npre_capture_s = 0.3\npost_capture_s = 0.1\nrelearn_s = 0.2\n";

/// A whole config file that plays the scene at `scene_path`, with `capture` and `motion`
/// (TOML lines, each ending in a newline, or empty) added to those sections.
pub fn config(scene_path: &str, capture: &str, motion: &str) -> String {
    format!("[capture]\nscene = \"{scene_path}\"\n{capture}[motion]\n{motion}[web]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_puts_each_setting_in_its_section() {
        let c = config("/s.toml", "fps = 15\n", MOTION_FAST);
        let capture = c.find("[capture]").unwrap();
        let motion = c.find("[motion]").unwrap();
        let web = c.find("[web]").unwrap();
        let fps = c.find("fps = 15").unwrap();
        let gap = c.find("quiet_gap_s").unwrap();
        assert!(capture < fps && fps < motion, "{c}");
        assert!(motion < gap && gap < web, "{c}");
        assert!(c.contains("scene = \"/s.toml\""), "{c}");
    }
}
